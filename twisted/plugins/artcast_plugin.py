"""
The C{twistd artcast} plugin.  It holds no logic and imports nothing from
Artcast: C{artcast.server.tap} is imported only when the plugin is used.
"""

from twisted.application.service import ServiceMaker

artcast = ServiceMaker(
    "Artcast",
    "artcast.server.tap",
    "Push live data from multicast sources to HTTP long-poll clients.",
    "artcast",
)
