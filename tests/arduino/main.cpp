// The stand-in's runtime: setup() once, then loop() until told to stop.
//
// Environment:
//   ARDUINO_LINES    stop (exit 0) once Serial has printed this many lines;
//   ARDUINO_SECONDS  stop (exit 0) after this many seconds (default 60);
//                    checked after each loop() and in delay().
#include "WiFi.h"

#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <netdb.h>
#include <poll.h>
#include <random>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

void setup();
void loop();

HardwareSerial Serial;
WiFiClass WiFi;

static const auto started = std::chrono::steady_clock::now();
static std::mt19937 generator(std::random_device{}());
static long linesPrinted = 0;
static long lineLimit = 0;
static unsigned long timeLimit = 60000;

unsigned long millis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now() - started).count();
}

static void stopIfDone() {
  if ((lineLimit > 0 && linesPrinted >= lineLimit) || millis() >= timeLimit) {
    std::fflush(stdout);
    std::exit(0);
  }
}

void delay(unsigned long ms) {
  unsigned long end = millis() + ms;
  while (millis() < end) {  // in slices, so a time limit ends a long delay
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(end - millis(), 100UL)));
    stopIfDone();
  }
}

long random(long howbig) { return howbig <= 0 ? 0 : random(0, howbig); }

long random(long howsmall, long howbig) {
  if (howbig <= howsmall) return howsmall;
  return std::uniform_int_distribution<long>(howsmall, howbig - 1)(generator);
}

void HardwareSerial::begin(unsigned long) {}

size_t HardwareSerial::print(const char *text) {
  size_t n = std::fputs(text, stdout) >= 0 ? std::strlen(text) : 0;
  std::fflush(stdout);
  return n;
}

size_t HardwareSerial::println(const char *text) {
  size_t n = print(text) + print("\n");
  linesPrinted++;
  return n;
}

size_t HardwareSerial::printf(const char *format, ...) {
  va_list args;
  va_start(args, format);
  int n = std::vprintf(format, args);
  va_end(args);
  for (const char *c = format; *c; c++) linesPrinted += (*c == '\n');
  std::fflush(stdout);
  return n < 0 ? 0 : n;
}

wl_status_t WiFiClass::begin(const char *ssid, const char *) {
  std::fprintf(stderr, "arduino: WiFi.begin(\"%s\")\n", ssid);
  return WL_DISCONNECTED;
}

wl_status_t WiFiClass::status() {  // connected at the second look
  return ++polls > 1 ? WL_CONNECTED : WL_DISCONNECTED;
}

int WiFiClient::connect(const char *host, uint16_t port) {
  stop();
  addrinfo hints{}, *found = nullptr;
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  char service[8];
  std::snprintf(service, sizeof service, "%u", (unsigned)port);
  if (getaddrinfo(host, service, &hints, &found) != 0) return 0;
  fd = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
  if (fd >= 0 && ::connect(fd, found->ai_addr, found->ai_addrlen) != 0) {
    ::close(fd);
    fd = -1;
  }
  freeaddrinfo(found);
  std::fprintf(stderr, "arduino: connect %s:%u %s\n", host, (unsigned)port,
               fd >= 0 ? "ok" : "failed");
  return fd >= 0;
}

uint8_t WiFiClient::connected() {
  if (fd < 0) return 0;
  char c;
  ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) return 1;
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 1;
  return 0;
}

size_t WiFiClient::print(const char *text) {
  if (fd < 0) return 0;
  const char *end = std::strchr(text, '\r');
  std::fprintf(stderr, "arduino: request %.*s\n",
               (int)(end ? end - text : (long)std::strlen(text)), text);
  size_t length = std::strlen(text), sent = 0;
  while (sent < length) {
    ssize_t n = send(fd, text + sent, length - sent, MSG_NOSIGNAL);
    if (n <= 0) return sent;
    sent += n;
  }
  return sent;
}

int WiFiClient::readByte() {
  if (fd < 0) return -1;
  pollfd want{fd, POLLIN, 0};
  if (poll(&want, 1, (int)std::min(timeout, 3600000UL)) <= 0) return -1;
  unsigned char c;
  return recv(fd, &c, 1, 0) == 1 ? c : -1;
}

String WiFiClient::readStringUntil(char terminator) {
  std::string line;
  for (int c = readByte(); c >= 0 && c != terminator; c = readByte()) line += (char)c;
  return String(line);
}

size_t WiFiClient::readBytes(char *buffer, size_t length) {
  size_t got = 0;
  for (int c; got < length && (c = readByte()) >= 0;) buffer[got++] = (char)c;
  return got;
}

void WiFiClient::stop() {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

int main() {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  if (const char *lines = std::getenv("ARDUINO_LINES")) lineLimit = std::atol(lines);
  if (const char *seconds = std::getenv("ARDUINO_SECONDS")) timeLimit = std::atol(seconds) * 1000UL;
  setup();
  for (;;) {
    loop();
    stopIfDone();
  }
}
