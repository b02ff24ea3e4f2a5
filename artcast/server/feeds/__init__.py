"""
Feeds: what puts datums into the store, each an
L{artcast.server.interfaces.IFeed}: the multicast groups
(L{artcast.server.feeds.multicast.MulticastFeed}), HTTP publishing
(L{artcast.server.feeds.publish.HTTPPublisher}) and C{--demo}
(L{artcast.server.feeds.demo.DemoFeed}).
"""
