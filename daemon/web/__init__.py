"""The web console: server-rendered pages over the API's own queries and serializers,
a little plain JavaScript, a Server-Sent Events stream (see `console.py`)."""
