"""Clients generate from the committed document with nothing dropped: openapi-python-client (a dev
dependency) builds a Python client that imports and talks to a served Loudou, and openapi-typescript
(npm, pinned, installed into .loudou/npm-clients on first use) builds types that tsc accepts."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.contract.served import ROOT, Served, served

DOCUMENT = ROOT / "openapi" / "openapi.json"
HERE = Path(__file__).resolve().parent
OPENAPI_TYPESCRIPT = "openapi-typescript@7.13.0"
TYPESCRIPT = "typescript@5.9.3"
NPM_CACHE = ROOT / ".loudou" / "npm-clients"

pytestmark = pytest.mark.slow


def _document() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DOCUMENT.read_text())
    return doc


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@pytest.fixture(scope="module")
def python_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    """The generated package (imported) and the generator's output."""
    out = tmp_path_factory.mktemp("pyclient")
    package = out / "loudou_client"
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "openapi-python-client"),
            "generate",
            "--path",
            str(DOCUMENT),
            "--output-path",
            str(package),
            "--meta",
            "none",
            "--config",
            str(HERE / "openapi-python-client.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("loudou_client"), output
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m == "loudou_client" or m.startswith("loudou_client.")]:
            del sys.modules[name]


def test_python_client_drops_no_model_and_no_response(python_client: tuple[Any, str]) -> None:
    module, output = python_client
    # The generator names everything it leaves out in a warning.
    assert "Warning" not in output and "WARNING" not in output, output
    assert "Unable to parse" not in output, output
    package = Path(module.__file__).parent
    models = importlib.import_module("loudou_client.models")
    generated = {_key(name) for name in models.__all__}
    doc = _document()
    missing = [name for name in doc["components"]["schemas"] if _key(name) not in generated]
    assert missing == [], f"models dropped: {missing}"
    for name in ("QuoteRead", "QuoteRevisionRead", "Page_QuoteRead_", "PaymentTerm", "PaymentTermRead"):
        assert _key(name) in generated, name
    # Every operation has its module, and its module parses every status the document declares.
    sources = {p.stem: p.read_text() for p in (package / "api").rglob("*.py") if p.stem != "__init__"}
    dropped: list[str] = []
    operations = 0
    for path, item in doc["paths"].items():
        for method, op in item.items():
            operations += 1
            stem = re.sub(r"[^a-z0-9_]", "", op["operationId"].lower().replace("-", "_"))
            source = sources.get(stem)
            if source is None:
                dropped.append(f"{method.upper()} {path}: no module {stem}")
                continue
            for status in op["responses"]:
                if f"response.status_code == {status}" not in source:
                    dropped.append(f"{method.upper()} {path}: response {status}")
    assert dropped == [], "\n".join(dropped)
    assert operations == len(sources)


@pytest.fixture(scope="module")
def app() -> Iterator[Served]:
    with served() as running:
        yield running


def test_python_client_reads_me_and_creates_a_lead(python_client: tuple[Any, str], app: Served) -> None:
    module, _ = python_client
    authme = importlib.import_module("loudou_client.api.auth.authme")
    create_lead = importlib.import_module("loudou_client.api.leads.leadscreate_lead")
    lead_create = importlib.import_module("loudou_client.models.lead_create").LeadCreate
    with module.AuthenticatedClient(base_url=app.base_url, token=app.keys["rep"]) as client:
        me = authme.sync_detailed(client=client)
        assert me.status_code == 200, me.content
        assert me.parsed.role == "rep"
        assert str(me.parsed.organisation.id) == app.org_id
        email = f"client-{uuid.uuid4().hex[:8]}@example.com"
        created = create_lead.sync_detailed(client=client, body=lead_create(name="张伟", email=email))
        assert created.status_code == 201, created.content
        assert created.parsed.email == email
        assert created.parsed.name == "张伟"
    with module.Client(base_url=app.base_url) as anonymous:
        refused = authme.sync_detailed(client=anonymous)
        assert refused.status_code == 401
        assert refused.parsed.code == "unauthorized"


def _npm_tools() -> Path:
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("node and npm are not installed: the TypeScript client cannot be generated here")
    bin_dir = NPM_CACHE / "node_modules" / ".bin"
    if not (bin_dir / "openapi-typescript").exists() or not (bin_dir / "tsc").exists():
        NPM_CACHE.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(NPM_CACHE),
                "--no-audit",
                "--no-fund",
                OPENAPI_TYPESCRIPT,
                TYPESCRIPT,
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    return bin_dir


def test_typescript_client_generates_and_type_checks(tmp_path: Path) -> None:
    tools = _npm_tools()
    types = tmp_path / "loudou.d.ts"
    done = subprocess.run(
        [str(tools / "openapi-typescript"), str(DOCUMENT), "--output", str(types)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warn" not in done.stderr.lower(), done.stderr
    text = types.read_text()
    doc = _document()
    missing = [name for name in doc["components"]["schemas"] if f"    {name}: " not in text]
    assert missing == [], f"schemas missing from the TypeScript types: {missing}"
    usage = tmp_path / "usage.ts"
    usage.write_text(
        'import type { components, paths } from "./loudou";\n'
        'type Me = paths["/v1/me"]["get"]["responses"][200]["content"]["application/json"];\n'
        'type Quote = components["schemas"]["QuoteRead"];\n'
        'type Problem = components["schemas"]["Problem"];\n'
        "export const role = (me: Me): string => me.role;\n"
        "export const terms = (q: Quote): string[] => q.payment_terms.map((t) => t.percent);\n"
        "export const code = (p: Problem): string => p.code;\n"
    )
    done = subprocess.run(
        [str(tools / "tsc"), "--noEmit", "--strict", "--skipLibCheck", "false", str(usage), str(types)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
