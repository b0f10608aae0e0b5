# Sourced by the scripts: make .venv with the project and its extras, once and when pyproject.toml changes.
# SESSIONMETA_EXTRAS picks the extras (default: all development extras).
set -euo pipefail
extras="${SESSIONMETA_EXTRAS:-dev,postgres,psycopg,mysql,agents,fastapi}"
venv="${SESSIONMETA_VENV:-.venv}"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "sessionmeta needs Python 3.10 or newer; $python is $("$python" --version 2>&1)" >&2
    exit 2
fi
stamp="$venv/.sessionmeta-installed-$(echo "$extras" | tr ',' '-')"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[$extras]"
    touch "$stamp"
fi
