# The directory novahooks writes to, for the demo OpenLDAP (docker-compose.yml, service
# "ldap", image bitnamilegacy/openldap:2.6). Mounted into /docker-entrypoint-initdb.d,
# it is sourced once by the image's setup, after the first initialisation and with slapd
# stopped (not executable on purpose: sourcing gives it ldap_start_bg, ldap_stop and the
# LDAP_* variables).
#
# Same tree and ACLs as the slapd of the test suite (tests/servers/slapd.py): the
# service account cn=novahooks,ou=services,<root> may write only under ou=hosts, bound
# users read the rest, anonymous users may only authenticate. Its password is
# NOVAHOOKS_DIRECTORY_PASSWORD from deploy/secrets.env, the one the ldap worker binds with.

: "${NOVAHOOKS_DIRECTORY_PASSWORD:?is not set: see deploy/secrets.env.example}"

ldap_start_bg

novahooks_hash="$(printf '%s' "$NOVAHOOKS_DIRECTORY_PASSWORD" | slappasswd -n -T /dev/stdin)"
novahooks_dc="${LDAP_ROOT%%,*}"
novahooks_dc="${novahooks_dc#dc=}"

ldapadd -H "ldapi:///" -D "$LDAP_ADMIN_DN" -w "$LDAP_ADMIN_PASSWORD" <<EOF
dn: ${LDAP_ROOT}
objectClass: dcObject
objectClass: organization
dc: ${novahooks_dc}
o: ${novahooks_dc}

dn: ou=hosts,${LDAP_ROOT}
objectClass: organizationalUnit
ou: hosts

dn: ou=services,${LDAP_ROOT}
objectClass: organizationalUnit
ou: services

dn: cn=novahooks,ou=services,${LDAP_ROOT}
objectClass: applicationProcess
objectClass: simpleSecurityObject
cn: novahooks
userPassword: ${novahooks_hash}
EOF

ldapmodify -Q -Y EXTERNAL -H "ldapi:///" <<EOF
dn: olcDatabase={2}mdb,cn=config
changetype: modify
replace: olcAccess
olcAccess: {0}to dn.subtree="ou=hosts,${LDAP_ROOT}" by dn.exact="cn=novahooks,ou=services,${LDAP_ROOT}" write by users read by * none
olcAccess: {1}to attrs=userPassword by self =w by anonymous auth by * none
olcAccess: {2}to * by users read by * none
EOF

unset novahooks_hash novahooks_dc
ldap_stop
