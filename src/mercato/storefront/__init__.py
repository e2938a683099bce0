"""The storefront: server-rendered HTML pages at the gateway root for the people who shop
and the administrators who run the catalogue (API.md, "Storefront").

The pages are a client of the public API like any other: they call the services on the
gateway's own upstream sessions with the signed-in user's bearer token, so every rule of the
API (validation, ownership, roles, rate limits) holds for a browser too. The browser holds
only a signed session id (:mod:`.sessions`); the tokens stay server-side.
"""
