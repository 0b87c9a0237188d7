"""Real servers for the tests and the demo: a local control plane, pebble, nginx."""
