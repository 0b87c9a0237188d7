"""``make bench``: throughput, latency and memory figures of the operator, its webhook, the
nginx agent and the tenancy gate, measured on real servers (see ``bench/README.md``)."""
