"""The Ray Serve application, its HTTP ingress, and the Python client."""
