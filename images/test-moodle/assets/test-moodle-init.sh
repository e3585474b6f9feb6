#!/bin/sh
# First boot of test-moodle (and every boot: config.php is written again from
# /etc/test-moodle.env). Installs Moodle's database once, opens Moodle's HTTP security
# lists for local testing and registers the Ananke hub given by ANANKE_HUB_URL.
#
# /etc/test-moodle.env (written by scripts/test-moodle.sh):
#   MOODLE_URL             the address browsers and the hub use for Moodle
#   ANANKE_HUB_URL         the hub's address as Moodle and browsers reach it (optional)
#   MOODLE_ADMIN_PASSWORD  the admin's password (default Admin123.)
#   MOODLE_LISTEN          where Apache listens: "80" (a published port) or HOST:PORT
#                          (the host's network, the default of scripts/test-moodle.sh)
set -eu
MOODLE_URL=${MOODLE_URL:-http://127.0.0.1:9090}
ADMIN_PASSWORD=${MOODLE_ADMIN_PASSWORD:-Admin123.}
MARKER=/var/lib/moodledata/.test-moodle-installed
php=/usr/bin/php

# Apache's port. On the host's network (the default), 127.0.0.1 is the same for the
# browser, the hub and Moodle: Moodle fetches the hub's keyset and Kore Moodle's token
# endpoint at the addresses the browser uses.
echo "Listen ${MOODLE_LISTEN:-80}" >/etc/apache2/ports.conf

# PostgreSQL listens on its Unix socket only (set in the image: restarting it here would
# stop this unit too, which Requires= it). Moodle connects as www-data (peer authentication).

# Moodle 5.1 serves its public/ directory; older releases the top directory.
if [ -f /opt/moodle/public/version.php ]; then
    echo "DocumentRoot /opt/moodle/public" >/etc/apache2/moodle-root.conf
else
    echo "DocumentRoot /opt/moodle" >/etc/apache2/moodle-root.conf
fi

# Moodle's config.php: ours, so that a re-created container (same volumes) finds the
# same database and data without running the installer again.
cat >/opt/moodle/config.php <<PHP
<?php  // Written by test-moodle-init at boot: edit /etc/test-moodle.env instead.
unset(\$CFG);
global \$CFG;
\$CFG = new stdClass();
\$CFG->dbtype = 'pgsql';
\$CFG->dblibrary = 'native';
\$CFG->dbhost = '';
\$CFG->dbname = 'moodle';
\$CFG->dbuser = 'www-data';
\$CFG->dbpass = '';
\$CFG->prefix = 'mdl_';
\$CFG->dboptions = ['dbpersist' => 0, 'dbport' => '', 'dbsocket' => '/var/run/postgresql'];
\$CFG->wwwroot = '${MOODLE_URL}';
\$CFG->dataroot = '/var/lib/moodledata';
\$CFG->admin = 'admin';
\$CFG->directorypermissions = 02770;
require_once(__DIR__ . '/lib/setup.php');
PHP
chmod 0640 /opt/moodle/config.php
chgrp www-data /opt/moodle/config.php
chown -R www-data:www-data /var/lib/moodledata

if [ -e "$MARKER" ]; then
    exit 0
fi

echo "test-moodle: creating the database"
if ! runuser -u postgres -- psql -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'www-data'" | grep -q 1; then
    runuser -u postgres -- psql -q -c 'CREATE USER "www-data"'
fi
if ! runuser -u postgres -- psql -tAc "SELECT 1 FROM pg_database WHERE datname = 'moodle'" | grep -q 1; then
    runuser -u postgres -- createdb -O www-data -E UTF8 -T template0 moodle
fi

echo "test-moodle: installing Moodle at $MOODLE_URL (this takes several minutes)"
runuser -u www-data -- "$php" /opt/moodle/admin/cli/install_database.php \
    --agree-license --lang=en --adminuser=admin --adminpass="$ADMIN_PASSWORD" \
    --adminemail=admin@example.invalid --supportemail=admin@example.invalid \
    --fullname="Test Moodle for Ananke" --shortname=testmoodle

# Local testing: Moodle refuses outgoing requests to private addresses and to ports
# other than 80 and 443 by default (Site administration > General > Security > HTTP
# security). The hub runs on such an address and port.
runuser -u www-data -- "$php" /opt/moodle/admin/cli/cfg.php --name=curlsecurityblockedhosts --set=""
runuser -u www-data -- "$php" /opt/moodle/admin/cli/cfg.php --name=curlsecurityallowedport --set=""

if [ -n "${ANANKE_HUB_URL:-}" ]; then
    runuser -u www-data -- "$php" /opt/test-moodle/register_ananke.php "$ANANKE_HUB_URL" \
        >/var/lib/moodledata/ananke-registration.txt
    cat /var/lib/moodledata/ananke-registration.txt
fi
touch "$MARKER"
echo "test-moodle: ready at $MOODLE_URL (admin / the password of MOODLE_ADMIN_PASSWORD)"
