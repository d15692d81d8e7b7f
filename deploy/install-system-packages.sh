#!/usr/bin/env bash
# Install the Debian packages mailgate's embedded mode, tests and mail path need.
# Idempotent: does nothing when everything is present. Needs root (or sudo).
# Services are not started here: mailgate and its tests run their own instances
# with their own config directories on loopback ports.
set -euo pipefail
# gcc, libldap2-dev, libsasl2-dev, libmilter-dev: pip builds python-ldap and
# pymilter against them. systemd: systemd-analyze verify of deploy/systemd (tests).
# postfix-pcre: the sub-address table (deploy/postfix/subaddress.pcre.in).
# chromium, chromium-driver: tests/test_swagger_ui.py drives Swagger UI headless.
packages=(slapd ldap-utils gcc libc6-dev libldap2-dev libsasl2-dev postfix postfix-ldap
          postfix-pcre dovecot-core dovecot-imapd dovecot-lmtpd dovecot-ldap libmilter-dev
          systemd chromium chromium-driver prometheus)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# Postfix asks a debconf question at install time; no system mail configuration.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
# slapd: no default database (mailgate builds its own from ldif/).
echo "slapd slapd/no_configuration boolean true" | $SUDO debconf-set-selections
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
