#!/bin/bash
# The entry point of every mailgate container (deploy/docker/Dockerfile).
#
#   mailgate-entrypoint directory|gateway|sync|milter|postfix|dovecot
#   mailgate-entrypoint health <role>        the compose healthcheck of that role
#   mailgate-entrypoint cli <command...>     `mailgate <command>` with the gateway's settings
#   mailgate-entrypoint <anything else>      runs it as given (e.g. `mailgate token list`)
#
# Each role renders its configuration with the product's own commands
# (`mailgate render-config ...`) at every start, then runs the service in the
# foreground. directory, gateway, sync and milter run as the user `mailgate`;
# Postfix and Dovecot start as root and drop privileges themselves.
#
# Secrets come as files (compose `secrets:`, mounted at /run/secrets/<name>):
#   admin_token, ldap_admin, ldap_gateway, ldap_postfix, ldap_dovecot, ldap_milter,
#   tls_cert, tls_key, dovecot_api_key (the doveadm HTTP API: Dovecot and the gateway)
# Their host files may be root-only: a role that runs unprivileged gets private
# copies (mode 0400, owner mailgate) under /run/mailgate/secrets.
#
# Settings (environment): MAILGATE_* as in the README; for the mail roles also
#   MAILGATE_DIRECTORY_URL  the directory, default ldap://directory:3389
#   MAIL_HOSTNAME           Postfix myhostname, default mail.example.net
#   DOVECOT_HOST, MILTER_HOST  where Postfix finds them, default dovecot, milter
#   MAILGATE_DOVECOT_URL    the gateway's way to doveadm, default http://dovecot:8080
set -euo pipefail

SECRETS=${MAILGATE_SECRETS_DIR:-/run/secrets}
PRIVATE=/run/mailgate
DATA=${MAILGATE_DATA_DIR:-/var/lib/mailgate}
DIRECTORY_URL=${MAILGATE_DIRECTORY_URL:-ldap://directory:3389}
BASE_DN=${MAILGATE_LDAP_BASE_DN:-dc=mail,dc=internal}
HEARTBEAT=$PRIVATE/sync-heartbeat

say() { echo "mailgate-entrypoint: $*" >&2; }
die() { say "$*"; exit 2; }

need_secret() {
  [ -s "$SECRETS/$1" ] || die "secret $1 missing: expected a non-empty file $SECRETS/$1"
}

# A copy of secret $1 that the mailgate user can read; prints its path.
private_copy() {
  need_secret "$1"
  install -d -o mailgate -g mailgate -m 0700 "$PRIVATE" "$PRIVATE/secrets"
  install -o mailgate -g mailgate -m 0400 "$SECRETS/$1" "$PRIVATE/secrets/$1"
  echo "$PRIVATE/secrets/$1"
}

# Run "$@" as mailgate (unless the container was already started as another user).
as_mailgate() {
  if [ "$(id -u)" = 0 ]; then
    exec setpriv --reuid=mailgate --regid=mailgate --init-groups --inh-caps=-all -- "$@"
  fi
  exec "$@"
}

# A TCP port on this container answers.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# -- directory: the managed slapd built from ldif/ -------------------------------
directory() {
  install -d -o mailgate -g mailgate -m 0700 "$DATA" "$DATA/secrets"
  # The service passwords come from the secrets. They are seeded into the data
  # directory before the directory is first built (mailgate directory hashes
  # them into the entries); later changes need a password change in LDAP too.
  local name src dst
  for name in admin gateway postfix dovecot milter; do
    src=$SECRETS/ldap_$name
    dst=$DATA/secrets/ldap-$name.password
    need_secret "ldap_$name"
    if [ ! -e "$DATA/ldap/slapd.d/cn=config.ldif" ]; then
      tr -d '\r\n' <"$src" >"$dst.tmp"
      chown mailgate:mailgate "$dst.tmp" && chmod 0600 "$dst.tmp" && mv "$dst.tmp" "$dst"
    elif [ "$(tr -d '\r\n' <"$src")" != "$(cat "$dst")" ]; then
      say "warning: secret ldap_$name differs from the password the directory was built" \
          "with ($dst); change it in LDAP as well (docs/deployment.md, rotating secrets)"
    fi
  done
  chown mailgate:mailgate "$DATA"
  [ -d "$DATA/ldap" ] && chown -R mailgate:mailgate "$DATA/ldap" "$DATA/secrets"
  export MAILGATE_EMBEDDED_LDAP_URL=${MAILGATE_EMBEDDED_LDAP_URL:-ldap://0.0.0.0:3389}
  unset MAILGATE_LDAP_URL
  as_mailgate mailgate directory
}

# -- gateway: the HTTPS API ---------------------------------------------------------
# The gateway's settings: directory, its password, the admin token (as mailgate).
gateway_env() {
  MAILGATE_LDAP_URL=${MAILGATE_LDAP_URL:-$DIRECTORY_URL}
  MAILGATE_LDAP_PASSWORD_FILE=$(private_copy ldap_gateway)
  MAILGATE_ADMIN_TOKEN_FILE=$(private_copy admin_token)
  export MAILGATE_LDAP_URL MAILGATE_LDAP_PASSWORD_FILE MAILGATE_ADMIN_TOKEN_FILE
  # Mailbox usage from Dovecot's doveadm HTTP API, when its key is mounted here.
  if [ -s "$SECRETS/dovecot_api_key" ]; then
    MAILGATE_DOVECOT_URL=${MAILGATE_DOVECOT_URL:-http://${DOVECOT_HOST:-dovecot}:8080}
    MAILGATE_DOVECOT_API_KEY_FILE=$(private_copy dovecot_api_key)
    export MAILGATE_DOVECOT_URL MAILGATE_DOVECOT_API_KEY_FILE
  fi
}

gateway() {
  gateway_env
  MAILGATE_TLS_CERT=$(private_copy tls_cert)
  MAILGATE_TLS_KEY=$(private_copy tls_key)
  MAILGATE_LISTEN=${MAILGATE_LISTEN:-0.0.0.0:8443}
  # Per-process state only (the workers' metrics files, a converted TLS key):
  # the gateway keeps nothing that must outlive the container.
  MAILGATE_DATA_DIR=${MAILGATE_DATA_DIR:-$PRIVATE/data}
  install -d -o mailgate -g mailgate -m 0700 "$MAILGATE_DATA_DIR"
  # The JSON sync runs in the sync container only (exactly one scheduler).
  unset MAILGATE_JSON_URLS
  export MAILGATE_TLS_CERT MAILGATE_TLS_KEY MAILGATE_LISTEN MAILGATE_DATA_DIR
  as_mailgate mailgate serve
}

# -- cli: any mailgate command with the gateway's settings ---------------------------
#   docker compose exec gateway mailgate-entrypoint cli token list
cli() {
  gateway_env
  as_mailgate mailgate "$@"
}

# -- sync: `mailgate sync --once` every MAILGATE_JSON_INTERVAL seconds ------------------
sync() {
  # Settings require an admin token whenever MAILGATE_LDAP_URL is set; the sync
  # does not use it.
  gateway_env
  install -d -o mailgate -g mailgate -m 0700 "$PRIVATE"
  as_mailgate "$0" sync-loop
}

sync_loop() {
  local interval=${MAILGATE_JSON_INTERVAL:-300} rc
  trap 'exit 0' TERM INT
  if [ -z "${MAILGATE_JSON_URLS:-}" ]; then
    say "sync: MAILGATE_JSON_URLS is not set: no JSON sources, nothing to sync"
  fi
  while :; do
    rc=-
    if [ -n "${MAILGATE_JSON_URLS:-}" ]; then
      # The lock in LDAP makes a run that overlaps another gateway's a "busy" (4).
      mailgate sync --once && rc=0 || rc=$?
    fi
    echo "$(date +%s) $rc" >"$HEARTBEAT"
    sleep "$interval" &
    wait $! || true
  done
}

# -- milter: the From: header check of authenticated submission ----------------------
milter() {
  local password
  password=$(private_copy ldap_milter)
  unset MAILGATE_LDAP_URL
  as_mailgate mailgate milter --socket "inet:10031@0.0.0.0" --ldap-url "$DIRECTORY_URL" \
    --base-dn "$BASE_DN" --password-file "$password"
}

# -- postfix: port 25 and submission (587) --------------------------------------------
postfix_role() {
  need_secret ldap_postfix; need_secret tls_cert; need_secret tls_key
  unset MAILGATE_LDAP_URL
  local dovecot=${DOVECOT_HOST:-dovecot} milter=${MILTER_HOST:-milter}
  # Debian's configuration as installed, plus what mailgate renders.
  cp /etc/postfix/main.cf.debian /etc/postfix/main.cf
  cp /etc/postfix/master.cf.debian /etc/postfix/master.cf
  mailgate render-config postfix --out /etc/postfix/mailgate --ldap-url "$DIRECTORY_URL" \
    --base-dn "$BASE_DN" --password-file "$SECRETS/ldap_postfix" \
    --lmtp "lmtp:inet:$dovecot:24" --sasl-path "inet:$dovecot:12345" \
    --milter "inet:$milter:10031" --submission-listen 587 \
    --quota-status "inet:$dovecot:12340" >/dev/null
  cat /etc/postfix/mailgate/main.cf.fragment >>/etc/postfix/main.cf
  cat /etc/postfix/mailgate/master.cf.fragment >>/etc/postfix/master.cf
  # The container: no chroot (no copies of resolv.conf etc. to keep), log to
  # stdout, IPv4, TLS with the mounted pair; relay only for localhost.
  postconf -F '*/*/chroot = n'
  postconf -e "myhostname = ${MAIL_HOSTNAME:-mail.example.net}" \
    "mydestination = localhost" "mynetworks = 127.0.0.0/8" "inet_interfaces = all" \
    "inet_protocols = ipv4" "maillog_file = /dev/stdout" \
    "smtpd_tls_cert_file = $SECRETS/tls_cert" "smtpd_tls_key_file = $SECRETS/tls_key" \
    "smtpd_tls_security_level = may" "smtp_tls_security_level = may"
  postconf -X alias_maps alias_database 2>/dev/null || true
  postfix set-permissions >/dev/null 2>&1 || true
  postfix check
  exec postfix start-fg
}

# -- dovecot: IMAP, LMTP for Postfix, SASL for Postfix -----------------------------
dovecot_role() {
  need_secret ldap_dovecot; need_secret tls_cert; need_secret tls_key
  need_secret dovecot_api_key
  unset MAILGATE_LDAP_URL
  # LMTP, SASL and quota-status for Postfix, the doveadm HTTP API for the
  # gateway: on the compose network only (none of them is published).
  mailgate render-config dovecot --out /etc/dovecot/mailgate --ldap-url "$DIRECTORY_URL" \
    --base-dn "$BASE_DN" --password-file "$SECRETS/ldap_dovecot" --mail-root /var/vmail \
    --lmtp-listen 0.0.0.0:24 --auth-listen 0.0.0.0:12345 \
    --quota-status-listen 0.0.0.0:12340 --doveadm-listen 0.0.0.0:8080 \
    --doveadm-api-key-file "$SECRETS/dovecot_api_key" >/dev/null
  # Debian's system-user passdb would be asked first for every login.
  sed -i 's/^!include auth-system.conf.ext/#!include auth-system.conf.ext/' \
    /etc/dovecot/conf.d/10-auth.conf
  cat >/etc/dovecot/local.conf <<EOF
# Written by mailgate-entrypoint at container start.
listen = *
log_path = /dev/stderr
ssl = required
ssl_cert = <$SECRETS/tls_cert
ssl_key = <$SECRETS/tls_key
!include /etc/dovecot/mailgate/mailgate.conf
EOF
  install -d -o vmail -g vmail -m 0750 /var/vmail
  doveconf -n >/dev/null
  exec dovecot -F
}

# -- healthchecks --------------------------------------------------------------------
health() {
  case "${1:-}" in
    directory)
      ldapwhoami -x -o nettimeout=3 -H ldap://127.0.0.1:3389 \
        -D "cn=gateway,ou=services,$BASE_DN" -y "$DATA/secrets/ldap-gateway.password" >/dev/null
      ;;
    gateway)
      python3 - <<'EOF'
import ssl, sys, urllib.request
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE  # our own listener on loopback
with urllib.request.urlopen("https://127.0.0.1:8443/readyz", timeout=5, context=context) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
      ;;
    sync)
      # The loop runs, and its last run was no configuration error (exit 2).
      local now stamp rc
      now=$(date +%s)
      read -r stamp rc <"$HEARTBEAT"
      [ "$rc" != 2 ] && [ $((now - stamp)) -le $((${MAILGATE_JSON_INTERVAL:-300} + 3600)) ]
      ;;
    milter) port_open 10031 ;;
    postfix) postfix status >/dev/null 2>&1 && port_open 25 && port_open 587 ;;
    dovecot) port_open 143 && port_open 24 && port_open 12345 && port_open 12340 \
               && port_open 8080 ;;
    *) die "health: unknown role ${1:-}" ;;
  esac
}

role=${1:-}
case "$role" in
  directory) directory ;;
  gateway) gateway ;;
  cli) shift; cli "$@" ;;
  sync) sync ;;
  sync-loop) sync_loop ;;
  milter) milter ;;
  postfix) postfix_role ;;
  dovecot) dovecot_role ;;
  health) health "${2:-}" ;;
  "") die "usage: mailgate-entrypoint directory|gateway|sync|milter|postfix|dovecot" ;;
  *) exec "$@" ;;
esac
