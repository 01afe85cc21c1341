"""``/releases/abtest``: the A/B report page over a live server's metrics (R's p-value for the seeded counts),
as a plain GET form (JavaScript off) and as the htmx fragment; errors beside the form, the form kept."""

from __future__ import annotations

import httpx
import pytest
from tests.conftest import LiveServer
from tests.releases.test_abtest_api import SPLIT, seeded  # noqa: F401 (the module's live server, seeded)
from tests.ui.app import ui_client, ui_deps

from pitwall.ui.releases_view import abtest_form

pytestmark = pytest.mark.timeout(60)


def _section(html: str, testid: str) -> str:
    return html.split(f'data-testid="{testid}"', 1)[1].split("</table>", 1)[0]


def test_the_page_renders_the_report(seeded: LiveServer) -> None:  # noqa: F811
    r = httpx.get(seeded.url + "/releases/abtest", params={**SPLIT, "control": "control", "mde": "0.5"})
    assert r.status_code == 200, r.text
    t = r.text
    assert '<form method="get" action="/releases/abtest"' in t and 'hx-get="/releases/abtest"' in t
    assert 'value="sum by (variant) (shop_orders)"' in t and 'name="mde" value="0.5"' in t  # kept as typed
    variants = _section(t, "abtest-variants")
    assert "control" in variants and "9.00%" in variants and "12.35%" in variants and "6.79% – 11.83%" in variants
    comparisons = _section(t, "abtest-comparisons")
    assert 'data-testid="abtest-p">0.0847<' in comparisons and "z-test" in comparisons and "keep-running" in comparisons
    assert 'data-testid="abtest-sample-size">Sample size: <strong>773</strong>' in t
    arithmetic = t.split('data-testid="abtest-arithmetic"')[1].split("</ul>")[0]
    assert "pooled p = (63 + 45) / (510 + 500) = 0.10693" in arithmetic and "p = 2 (1 − Φ(|z|)) = 0.0847" in arithmetic
    assert "R&#39;s power.prop.test" in arithmetic and "→ 773 per variant" in arithmetic
    assert "/graph?expr=sum+by+%28variant%29+%28shop_orders%29" in t
    assert 'aria-current="page"' in t.split('data-key="r"')[1][:30]  # under Releases in the nav


def test_the_htmx_fragment_and_errors(seeded: LiveServer) -> None:  # noqa: F811
    with httpx.Client(base_url=seeded.url, timeout=30) as http:
        frag = http.get("/releases/abtest", params=SPLIT, headers={"HX-Request": "true"})
        bad = http.get("/releases/abtest", params={**SPLIT, "window": "7d"})
        bad_frag = http.get("/releases/abtest", params={**SPLIT, "window": "7d"}, headers={"HX-Request": "true"})
        empty = http.get("/releases/abtest")
        listing = http.get("/releases")
    assert frag.status_code == 200 and frag.text.startswith('<section id="abtest-result"')
    assert "<form" not in frag.text and 'data-testid="abtest-p">0.0847<' in frag.text
    assert bad.status_code == 400 and 'name="window" value="7d"' in bad.text
    assert 'data-testid="abtest-error">window: no query uses $window' in bad.text
    assert bad_frag.status_code == 200 and "window: no query uses $window" in bad_frag.text
    assert empty.status_code == 200 and "abtest-error" not in empty.text and "abtest-variants" not in empty.text
    assert empty.text.count('name="variant"') == 2  # two empty rows to fill in
    assert 'href="/releases/abtest"' in listing.text  # linked from the releases page, control plane or not


def test_form_state_and_without_metrics() -> None:
    f = abtest_form([("numerator", "a"), ("variant", "x"), ("successes", "s"), ("trials", "t"), ("from", "now-1h")])
    assert f.submitted and f.fields == {"numerator": "a"} and f.rows == [("x", "s", "t"), ("", "", "")]
    assert not abtest_form([("by", " ")]).submitted


async def test_without_the_metrics_pillar_the_page_says_so() -> None:
    async with ui_client(ui_deps()) as client:
        r = await client.get("/releases/abtest", params=SPLIT)
    assert r.status_code == 200 and "not available" in r.text and "abtest-form" not in r.text
