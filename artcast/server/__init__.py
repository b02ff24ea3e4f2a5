"""
The Artcast server: datums come in through feeds, are kept in the store, and
leave through outlets.

- L{artcast.server.feeds}: where a datum enters (the multicast groups, HTTP
  publishing, the demo sources).
- L{artcast.server.store}: where it is kept (the L{KeyStore}, with the
  pattern index of L{artcast.server.patterns}).
- L{artcast.server.outlets}: where it leaves (long polls, streams, pages, and
  the re-send to the multicast group).
- The HTTP face (L{artcast.server.routes}), the connections it serves
  (L{artcast.server.connections}), and the service that ties them together
  (L{artcast.server.service}, built from the options of L{artcast.server.tap},
  whose defaults are L{artcast.server.defaults}).

The public library, what sources and clients import, is beside it in
L{artcast}: L{artcast.wire}, L{artcast.source}, L{artcast.send},
L{artcast.client}.
"""
