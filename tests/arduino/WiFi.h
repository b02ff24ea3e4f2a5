// The stand-in's WiFi: always connected, and a WiFiClient over a POSIX TCP
// socket (blocking, with Stream's read timeout in milliseconds).  Each
// connection and request line is logged to standard error, for the tests.
#pragma once

#include "Arduino.h"

typedef enum { WL_IDLE_STATUS = 0, WL_CONNECTED = 3, WL_DISCONNECTED = 6 } wl_status_t;

class WiFiClass {
 public:
  wl_status_t begin(const char *ssid, const char *password);
  wl_status_t status();

 private:
  int polls = 0;
};

extern WiFiClass WiFi;

class WiFiClient {
 public:
  ~WiFiClient() { stop(); }
  int connect(const char *host, uint16_t port);
  // True while the socket is open and the peer has not closed it (or data
  // is left to read), as Arduino's.
  uint8_t connected();
  size_t print(const String &text) { return print(text.c_str()); }
  size_t print(const char *text);
  // Stream's timeout: how long a read waits for each byte, in ms.
  void setTimeout(unsigned long ms) { timeout = ms; }
  String readStringUntil(char terminator);
  size_t readBytes(char *buffer, size_t length);
  void stop();

 private:
  int readByte();  // -1 on timeout, end or error
  int fd = -1;
  unsigned long timeout = 1000;
};
