# Sourced by bin/run and bin/test: make sure .venv exists and has the given
# requirements file installed, then activate it.
#
# pip runs only when the requirements files changed since the last successful
# install (a hash stamp inside .venv), so repeated runs start at once.

find_python() {
  for candidate in "${PYTHON:-}" python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "NeuroScan needs Python 3.11 (python3.11 on PATH, or set PYTHON=/path/to/python3.11)." >&2
  return 1
}

ensure_venv() {
  local requirements="$1"
  if [ ! -x .venv/bin/python ]; then
    local python
    python="$(find_python)"
    echo "Creating .venv with $python ..."
    "$python" -m venv .venv
  fi
  # shellcheck disable=SC1091
  . .venv/bin/activate
  local stamp=".venv/.installed-$(basename "$requirements").sha256"
  local wanted
  wanted="$(cat requirements*.txt | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "Installing $requirements into .venv (first run or changed requirements) ..."
    python -m pip install --disable-pip-version-check -q -r "$requirements"
    echo "$wanted" > "$stamp"
  fi
}
