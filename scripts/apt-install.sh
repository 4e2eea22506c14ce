# Sourced by the scripts that install Debian packages for the tests and CI (install-browser.sh,
# start-postgres.sh): the apt-get call written once, with sudo when not root.
#
# apt_install TAG PACKAGE...: TAG prefixes the messages. apt's output goes to stderr, because a
# caller's stdout may carry a value its own caller reads (start-postgres prints the URL).
# Returns 1 with a message when there is no apt-get, or no root and no sudo.
apt_install() {
  local tag="$1"
  shift
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "$tag: apt-get not found: install $* by hand" >&2
    return 1
  fi
  local sudo=()
  if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      echo "$tag: not root and no sudo: cannot apt-get install $*" >&2
      return 1
    fi
  fi
  echo "$tag: apt-get install $*" >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "$@" >&2
}
