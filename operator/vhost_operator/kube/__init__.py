"""The only package that talks to the Kubernetes API.

It wraps the ``kubernetes`` client's blocking calls in threads for the asyncio operator, retries
transient failures a bounded number of times, and maps ``ApiException`` onto ``errors``.
"""
