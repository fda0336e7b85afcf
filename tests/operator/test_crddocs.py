"""CRD reference pages (``azora_operator.crddocs``) cover every field and stay current."""

from __future__ import annotations

from pathlib import Path

import yaml

from azora_operator.crddocs import render

ROOT = Path(__file__).resolve().parents[2]


def test_crd_docs_cover_every_field_and_rule() -> None:
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        page = render(crd)
        assert page.startswith(f"# {crd['spec']['names']['kind']}")
        for version in crd["spec"]["versions"]:
            for col in version["additionalPrinterColumns"]:
                assert f"| {col['name']} |" in page
        assert "Cross-field rules" in page
        committed = ROOT / "docs" / "crds" / f"{crd['spec']['names']['kind'].lower()}.md"
        assert committed.read_text() == page, "run `uv run azora-operator crd-docs`"
