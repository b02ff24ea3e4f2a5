// A small POSIX stand-in for the part of the Arduino API that
// examples/esp32/artcast_follow/artcast_follow.ino uses, so the tests can
// build the sketch with g++ and run it against a real server: String,
// Serial, delay, millis, random, min.  Not an emulator: just enough.
#pragma once

#include <algorithm>
#include <cstdarg>
#include <cstdint>
#include <cstdlib>
#include <string>

using std::min;
using std::max;

// Milliseconds since the program started.
unsigned long millis();
// Sleep that many milliseconds.
void delay(unsigned long ms);
// A random number in [0, howbig), or [howsmall, howbig).
long random(long howbig);
long random(long howsmall, long howbig);

class String {
 public:
  String() {}
  String(const char *text) : s(text ? text : "") {}
  String(const std::string &text) : s(text) {}
  explicit String(char c) : s(1, c) {}
  explicit String(int n) : s(std::to_string(n)) {}
  explicit String(unsigned int n) : s(std::to_string(n)) {}
  explicit String(long n) : s(std::to_string(n)) {}
  explicit String(unsigned long n) : s(std::to_string(n)) {}

  unsigned int length() const { return s.size(); }
  const char *c_str() const { return s.c_str(); }
  String &operator+=(const String &other) { s += other.s; return *this; }
  String &operator+=(const char *other) { s += other; return *this; }
  String &operator+=(char c) { s += c; return *this; }
  bool operator==(const String &other) const { return s == other.s; }
  bool operator==(const char *other) const { return s == other; }
  bool operator!=(const String &other) const { return s != other.s; }
  bool operator!=(const char *other) const { return s != other; }
  bool startsWith(const String &prefix) const { return s.compare(0, prefix.s.size(), prefix.s) == 0; }
  int indexOf(char c) const {
    size_t at = s.find(c);
    return at == std::string::npos ? -1 : (int)at;
  }
  String substring(unsigned int from) const { return from >= s.size() ? String() : String(s.substr(from)); }
  String substring(unsigned int from, unsigned int to) const {
    if (from > to) std::swap(from, to);
    if (from >= s.size()) return String();
    return String(s.substr(from, to - from));
  }
  // Like Arduino's: the leading integer (after spaces), 0 if none.
  long toInt() const { return std::strtol(s.c_str(), nullptr, 10); }
  void toLowerCase() {
    for (auto &c : s) c = (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c;
  }
  void trim() {
    const char *space = " \t\r\n\v\f";
    size_t first = s.find_first_not_of(space);
    if (first == std::string::npos) { s.clear(); return; }
    s = s.substr(first, s.find_last_not_of(space) - first + 1);
  }

  friend String operator+(const String &a, const String &b) { return String(a.s + b.s); }
  friend String operator+(const String &a, const char *b) { return String(a.s + b); }
  friend String operator+(const char *a, const String &b) { return String(a + b.s); }

 private:
  std::string s;
};

// The serial port: standard output.  Each line written is flushed at once.
class HardwareSerial {
 public:
  void begin(unsigned long baud);
  size_t print(const char *text);
  size_t print(const String &text) { return print(text.c_str()); }
  size_t print(long n) { return print(String(n)); }
  size_t println(const char *text);
  size_t println(const String &text) { return println(text.c_str()); }
  size_t println(long n) { return println(String(n)); }
  size_t println() { return println(""); }
  size_t printf(const char *format, ...) __attribute__((format(printf, 2, 3)));
};

extern HardwareSerial Serial;
