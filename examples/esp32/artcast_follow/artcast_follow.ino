// Artcast long-poll client for an ESP32 (Arduino core). Prints each value of ARTCAST_KEY.
#include <WiFi.h>

// Set these. (The tests compile this very file with -D: -DARTCAST_HOST='"127.0.0.1"' ...)
#ifndef WIFI_SSID
#define WIFI_SSID "your-network"
#endif
#ifndef WIFI_PASSWORD
#define WIFI_PASSWORD "your-password"
#endif
#ifndef ARTCAST_HOST
#define ARTCAST_HOST "192.168.1.10"     // the Artcast server
#endif
#ifndef ARTCAST_PORT
#define ARTCAST_PORT 8888
#endif
#ifndef ARTCAST_KEY
#define ARTCAST_KEY "test/tick"         // percent-encode anything but A-Z a-z 0-9 - . _ ~ /
#endif
#ifndef ARTCAST_TIMEOUT
#define ARTCAST_TIMEOUT 30              // seconds the server holds a poll before its 204
#endif

// What one poll tells the loop to do next.
enum Next { ASK_AGAIN, BACK_OFF, WAIT_RETRY_AFTER, GIVE_UP };

WiFiClient http;
String lastId;                          // the id of the last datum; empty: from now
uint32_t failures = 0;                  // errors in a row, for the backoff
uint32_t retryAfter = 0;                // seconds, from a 503's Retry-After
bool stopped = false;                   // a 4xx: asking again will not help

// Read one header line (without CR LF); empty at the end of the headers.
String readLine() {
  String line = http.readStringUntil('\n');
  line.trim();
  return line;
}

// One long poll: send it, read the answer, act on it.
Next pollOnce() {
  if (!http.connected() && !http.connect(ARTCAST_HOST, ARTCAST_PORT)) return BACK_OFF;
  String path = String("/artcasts/") + ARTCAST_KEY + "?timeout=" + String(ARTCAST_TIMEOUT);
  if (lastId.length()) path += "&since=" + lastId;     // ids need no encoding
  http.print("GET " + path + " HTTP/1.1\r\nHost: " + ARTCAST_HOST +
             "\r\nAccept: application/json\r\n\r\n");

  // Stream::setTimeout is in ms: wait 10 s longer than ?timeout= for the answer.
  // (On arduino-esp32 before 3.0, WiFiClient::setTimeout took seconds: give it
  // ARTCAST_TIMEOUT + 10 there.)
  http.setTimeout((ARTCAST_TIMEOUT + 10) * 1000UL);
  String status = readLine();           // "HTTP/1.1 200 OK"
  if (!status.startsWith("HTTP/1.")) return BACK_OFF;
  int code = status.substring(9, 12).toInt();
  long length = (code == 204 || code == 304) ? 0 : -1;
  String id;
  bool gap = false;
  bool close = false;
  retryAfter = 0;
  for (String line = readLine(); line.length(); line = readLine()) {
    int colon = line.indexOf(':');
    if (colon < 0) return BACK_OFF;
    String name = line.substring(0, colon);
    name.toLowerCase();
    String value = line.substring(colon + 1);
    value.trim();
    if (name == "content-length") length = value.toInt();
    else if (name == "artcast-id") id = value;
    else if (name == "artcast-gap") gap = (value == "1");
    else if (name == "retry-after") retryAfter = value.toInt();
    else if (name == "connection") { value.toLowerCase(); close = (value == "close"); }
  }
  if (length < 0 || length > 4096) return BACK_OFF;   // value answers always have a length
  static char body[4097];
  if (http.readBytes(body, length) != (size_t)length) return BACK_OFF;
  body[length] = '\0';
  if (close) http.stop();               // the server will not take another request on it

  if (code == 200) {
    if (gap) Serial.println("(some datums were missed)");
    Serial.println(body);               // the JSON value; parse it with ArduinoJson if needed
    lastId = id;
    return ASK_AGAIN;
  }
  if (code == 204) {                    // nothing new: ask again
    if (!lastId.length()) lastId = id;
    return ASK_AGAIN;
  }
  String problem = body;                // the server's reason, in one line
  problem.trim();
  Serial.printf("error %d: %s\n", code, problem.c_str());
  if (code == 503 && retryAfter > 0) return WAIT_RETRY_AFTER;
  if (code >= 400 && code < 500) return GIVE_UP;      // a bad key will not get better
  return BACK_OFF;
}

void setup() {
  Serial.begin(115200);
  WiFi.begin(WIFI_SSID, WIFI_PASSWORD);
  while (WiFi.status() != WL_CONNECTED) delay(250);
}

void loop() {
  if (stopped) {                        // show the error; a real device might blink a LED
    delay(1000);
    return;
  }
  Next next = pollOnce();
  if (next == ASK_AGAIN) {
    failures = 0;
    return;
  }
  http.stop();                          // start clean on the next attempt
  if (next == GIVE_UP) {
    Serial.println("stopped: fix the key or the server, then reset");
    stopped = true;
  } else if (next == WAIT_RETRY_AFTER) {
    failures = 0;                       // the server said when: come back then (at most 5 min)
    delay(min<uint32_t>(retryAfter, 300) * 1000UL + random(1000));
  } else {
    uint32_t bound = min<uint32_t>(30000, 500u << min<uint32_t>(failures++, 6));
    delay(random(bound + 1));           // exponential backoff, full jitter
  }
}
