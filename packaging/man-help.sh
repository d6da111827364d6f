#!/bin/sh
# The --help text that help2man turns into rstwatch.8 (see "Install and
# package" in CMakeLists.txt):
#
#   help2man ... "sh packaging/man-help.sh build/rstwatch"
#
# help2man reads one --help, but rstwatch's options live on its subcommands.
# So `man-help.sh RSTWATCH --help` prints `RSTWATCH --help`, the subcommands'
# usage lines folded into its usage (SYNOPSIS), its subcommand list as a
# *Commands* section, then each subcommand's --help as a section of its own
# (*rstwatch run*, ...). Their "Examples:" go to help2man's EXAMPLES, each
# line prefixed "$ " so that it is set verbatim. The subcommands are read
# from the binary's own list: a new one needs no change here.
set -eu

bin=$1
shift
case "${1-}" in
  --help) ;;
  --version) exec "$bin" --version ;;
  *) echo "usage: $0 RSTWATCH --help" >&2; exit 2 ;;
esac

main_help=$("$bin" --help)
commands=$(printf '%s\n' "$main_help" |
  awk '/^Subcommands:/ { on = 1; next } on && /^  [a-z]/ { print $1 } on && /^[^ ]/ { on = 0 }')
[ -n "$commands" ] || { echo "$0: no subcommands in '$bin --help'" >&2; exit 1; }

usages=""
for cmd in $commands; do
  usage=$("$bin" "$cmd" --help | sed -n 's/^Usage: //p')
  usages="$usages   or: $usage
"
done

printf '%s\n' "$main_help" | while IFS= read -r line; do
  case "$line" in
    Usage:*) printf '%s\n%s' "$line" "$usages" ;;
    Subcommands:) printf '*Commands*\n' ;;
    *) printf '%s\n' "$line" ;;
  esac
done

for cmd in $commands; do
  printf '\n*rstwatch %s*\n\n' "$cmd"
  # "Options:" would land in the main OPTIONS section: name it after the subcommand.
  "$bin" "$cmd" --help | sed \
    -e '/^Usage: /d' \
    -e "s/^Options:\$/Options of rstwatch $cmd:/" \
    -e '/^Examples:$/,/^$/ s/^  \([^ ]\)/  $ \1/'
done
