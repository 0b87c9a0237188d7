// Pins pebble and pebble-challtestsrv, Let's Encrypt's ACME test server and its DNS/HTTP mock (see
// hack/build-pebble.sh). Debian's pebble 2.4 has neither ACME Renewal Information (RFC 9773) nor
// ACME profiles; v2.7 added both, and the tests of both run against this build.
module vhost-operator.local/pebble

go 1.25.0

require github.com/letsencrypt/pebble/v2 v2.10.3

require (
	github.com/go-jose/go-jose/v4 v4.1.8 // indirect
	github.com/letsencrypt/challtestsrv v1.4.2 // indirect
	github.com/miekg/dns v1.1.62 // indirect
	golang.org/x/mod v0.24.0 // indirect
	golang.org/x/net v0.55.0 // indirect
	golang.org/x/sync v0.14.0 // indirect
	golang.org/x/sys v0.45.0 // indirect
	golang.org/x/tools v0.33.0 // indirect
)
