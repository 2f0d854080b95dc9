"""vecpress over HTTP: ``vecpress serve ROOT`` (``pip install 'vecpress[serve]'``).

* :mod:`vecpress.service.app` -- the endpoints (FastAPI), errors, the token;
* :mod:`vecpress.service.schemas` -- request and response bodies (pydantic);
* :mod:`vecpress.service.limits` -- what one request may ask; the body-size guard;
* :mod:`vecpress.service.registry` -- the collections under the root, opened once.

Only :mod:`~vecpress.service.app` imports FastAPI; nothing of this package is
imported by ``import vecpress``.
"""
