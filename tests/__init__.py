"""vhost-operator tests."""
