#!/bin/sh
# The installed rstwatch under the capability bounding set of the systemd
# unit (deploy/rstwatch.service), as `systemctl start rstwatch` would run it:
# set as RSTWATCH_BIN, it puts a test's agent in the unit's shoes.
set -eu
here=$(dirname "$0")
caps=$(sed -n 's/^CapabilityBoundingSet=//p' "$here/../../deploy/rstwatch.service" |
  tr 'A-Z' 'a-z' | sed 's/cap_/+/g; s/ /,/g')
exec setpriv --bounding-set="-all,$caps" --no-new-privs -- /usr/bin/rstwatch "$@"
