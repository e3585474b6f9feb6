"""The container manager: ``ananke container create|remove|list|shell|logs``.

A container directory (``containers/<name>/``) holds the admin's ``config.py`` (traitlets
config of :class:`~ananke_hub.container.config.Container`), the hub's config fragments
(``jupyterhub_config.d/``) and the runtime data that outlives the container
(``runtime/``). :mod:`.args` turns it into ``podman run`` arguments without touching
podman; :mod:`.manager` runs podman.
"""
