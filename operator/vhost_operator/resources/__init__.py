"""Resource models and rules: the shape of our custom resources and what makes them valid.

Pure data and computation. Nothing here does I/O or imports a Kubernetes client.
"""
