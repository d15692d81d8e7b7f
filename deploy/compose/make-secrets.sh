#!/usr/bin/env bash
# Create the secret files docker-compose.yml mounts, where they do not exist yet:
#   admin-token, ldap-{admin,gateway,postfix,dovecot,milter}.password,
#   dovecot-api.key (Dovecot's doveadm HTTP API) (random),
#   tls.crt + tls.key (a self-signed pair for the API, SMTP STARTTLS and IMAP;
#   replace them with your own certificate and key, same names).
#
#   deploy/compose/make-secrets.sh [DIR] [HOSTNAME...]
# DIR defaults to ./secrets (MAILGATE_SECRETS_DIR); the certificate names
# HOSTNAME... (default: $MAIL_HOSTNAME or mail.example.net), localhost,
# 127.0.0.1 and the compose service names. Existing files are never changed.
set -euo pipefail
dir=${1:-${MAILGATE_SECRETS_DIR:-./secrets}}
shift || true
names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${MAIL_HOSTNAME:-mail.example.net}")
umask 077
mkdir -p "$dir"
chmod 0700 "$dir"

random() { openssl rand -base64 33 | tr -d '\n/+=' | cut -c1-40; }
for name in admin-token ldap-admin.password ldap-gateway.password ldap-postfix.password \
            ldap-dovecot.password ldap-milter.password dovecot-api.key; do
  if [ ! -e "$dir/$name" ]; then
    random >"$dir/$name"
    echo "created $dir/$name"
  fi
done
if [ ! -e "$dir/tls.crt" ] || [ ! -e "$dir/tls.key" ]; then
  san="DNS:localhost,IP:127.0.0.1,DNS:gateway,DNS:postfix,DNS:dovecot"
  for n in "${names[@]}"; do san="DNS:$n,$san"; done
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
    -subj "/CN=${names[0]}" -addext "subjectAltName=$san" \
    -keyout "$dir/tls.key" -out "$dir/tls.crt" 2>/dev/null
  echo "created $dir/tls.crt and $dir/tls.key (self-signed for ${names[*]})"
fi
