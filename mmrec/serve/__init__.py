"""Serving: the pieces behind :class:`mmrec.Recommender` and the HTTP service.

``rwlock`` (readers-writer lock), ``state`` (onboarded items persisted under
``<run>/serving/``), ``content`` (reading items to onboard), ``confine``
(image paths confined to allowed roots) and ``image_urls`` (item images
downloaded from URLs, only when enabled) import no web framework; ``app``
(FastAPI) is imported only by ``mmrec serve`` and needs the ``serve`` extra.
"""
