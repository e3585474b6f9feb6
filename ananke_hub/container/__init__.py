"""The container manager: ``ananke container create|remove|list|shell|logs``.

Runs on the host, as the ``ananke`` command, outside any hub: it imports the hub
package's config checks and fragment loading, never the hub's runtime (spawner,
authenticator) or :mod:`kore`.

A container directory (``containers/<name>/``) holds the admin's ``config.py`` (traitlets
config of :class:`~ananke_hub.container.config.Container`), the hub's config fragments
(``jupyterhub_config.d/``) and the runtime data that outlives the container
(``runtime/``). :mod:`.args` turns it into ``podman run`` arguments without touching
podman; :mod:`.manager` runs podman.
"""
