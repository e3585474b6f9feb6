# The one hub config Ananke ships. Do not edit: put your settings into the numbered
# fragments of the config directory (ANANKE_CONFIG_DIR, /etc/ananke/config.d by default),
# which are loaded in sorted order on top of what this file sets.
from ananke_hub.hubconfig import configure

configure(get_config())  # noqa: F821
