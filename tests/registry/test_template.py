"""consul-template's language: the docs' examples (docs/templating-language.md) with their expected output,
Go text/template's syntax rules, and the errors and limits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pitwall.registry.template import (
    MissingKey,
    Record,
    TemplateError,
    parse,
    parse_service_query,
)

pytestmark = pytest.mark.timeout(30)

KV = {
    "service/redis/maxconns": "15",
    "service/redis/minconns": "5",
    "service/redis/nested/config/value": '"value"',
    "service/redis/folder/": "",
    "user/name": "Alice",
    "app/beta_active": "1",
    "config/admin/port": "1234",
    "config/maxconns": "5",
    "config/minconns": "2",
    "weights/web01": "20",
}


def web(node: str, ip: str, port: int, tags: list[str], status: str = "passing") -> Record:
    return Record(ID=f"web-{node}", Name="web", Tags=tags, Address=ip, Port=port, Node=node, NodeAddress=ip,
                  ServiceMeta={"version": "2"}, Status=status)


class FakeData:
    """The KV above and three instances of "web" (one critical), recording what was read."""

    def __init__(self, kv: dict[str, str] | None = None) -> None:
        self.kv = KV if kv is None else kv
        self.instances = [web("web01", "10.5.2.45", 2492, ["release", "production"]),
                          web("web02", "10.2.6.61", 2904, ["release"]),
                          web("web03", "10.2.6.62", 2905, ["canary"], "critical")]
        self.read: list[str] = []

    async def key(self, path: str) -> str | None:
        self.read.append(f"key:{path}")
        return self.kv.get(path)

    async def pairs(self, prefix: str) -> list[tuple[str, str, int]]:
        self.read.append(f"prefix:{prefix}")
        return sorted((k, v, 0) for k, v in self.kv.items() if k.startswith(prefix))

    async def service(self, name: str, tag: str, statuses: frozenset[str]) -> list[Record]:
        self.read.append(f"service:{name}")
        return [i for i in self.instances
                if i["Name"] == name and (not tag or tag in i["Tags"]) and i["Status"] in statuses]

    async def services(self) -> list[Record]:
        return [Record(Name="node01", Tags=["tag1", "tag2", "tag3"]), Record(Name="web", Tags=["release"])]

    def env(self, name: str) -> str:
        return {"CLUSTER_ID": "Prod-EU"}.get(name, "")


def render(text: str, data: Any = None) -> str:
    return asyncio.run(parse(text).render(data or FakeData()))


def fails(text: str, data: Any = None) -> TemplateError:
    with pytest.raises(TemplateError) as e:
        render(text, data)
    return e.value


# ---- the docs' examples ------------------------------------------------------------------------------

def test_key() -> None:
    assert render('{{ key "service/redis/maxconns" }}') == "15"


def test_key_or_default_and_key_exists() -> None:
    assert render('{{ keyOrDefault "service/redis/nope" "5" }}') == "5"
    assert render('{{ keyOrDefault "service/redis/maxconns" "5" }}') == "15"
    assert render('{{ if keyExists "app/beta_active" }}on{{ else }}off{{ end }}') == "on"
    assert render('{{ if keyExists "app/alpha" }}on{{ else }}off{{ end }}') == "off"


def test_ls_lists_the_top_level_only() -> None:
    assert render('{{ range ls "service/redis" }}\n{{ .Key }}:{{ .Value }}{{ end }}') == \
        "\nmaxconns:15\nminconns:5"


def test_tree_lists_everything_below() -> None:
    assert render('{{ range tree "service/redis" }}\n{{ .Key }}:{{ .Value }}{{ end }}') == \
        '\nmaxconns:15\nminconns:5\nnested/config/value:"value"'


def test_service_returns_healthy_instances() -> None:
    out = render('{{ range service "web" }}\nserver {{ .Name }} {{ .Address }}:{{ .Port }}{{ end }}')
    assert out == "\nserver web 10.5.2.45:2492\nserver web 10.2.6.61:2904"


def test_service_filters_and_tags() -> None:
    assert render('{{ range service "web|any" }}{{ .Node }} {{ end }}') == "web01 web02 web03 "
    assert render('{{ range service "web|critical" }}{{ .Node }}{{ end }}') == "web03"
    assert render('{{ range service "production.web" }}{{ .Node }}{{ end }}') == "web01"
    assert render('{{ range service "release.web" }}{{ .ID }},{{ end }}') == "web-web01,web-web02,"
    assert render('{{ range service "web" }}{{ .ServiceMeta.version }}{{ .Tags }}{{ end }}') == \
        "2[release production]2[release]"


def test_parse_service_query() -> None:
    assert parse_service_query("release.web@east-aws|passing,warning") == \
        ("web", "release", "east-aws", frozenset({"passing", "warning"}))
    assert parse_service_query("v1.2.web")[:2] == ("web", "v1.2")  # the tag runs to the last dot
    with pytest.raises(ValueError, match="unknown health filter"):
        parse_service_query("web|healthy")
    assert "invalid service query" in str(fails('{{ service "we b" }}'))


def test_services() -> None:
    assert render('{{ range services }}{{ .Name }}: {{ .Tags | join "," }}\n{{ end }}') == \
        "node01: tag1,tag2,tag3\nweb: release\n"


def test_env_and_or_default() -> None:
    assert render('{{ env "CLUSTER_ID" | toLower }}') == "prod-eu"
    assert render('{{ or (env "MISSING") "12345" }}') == "12345"


def test_helpers() -> None:
    assert render('{{ key "user/name" | toUpper }}') == "ALICE"
    assert render('{{ "foo.bar" | replaceAll "." "_" }}') == "foo_bar"
    assert render('{{ "foo\\nbar\\n" | split "\\n" }}') == "[foo bar ]"
    assert render('{{ "a\\nb" | toUpper | split "\\n" | join "," }}') == "A,B"
    assert render('{{ "  x \\t\\n" | trimSpace }}|') == "x|"
    assert render('{{ "12" | parseInt }} {{ gt ("12" | parseInt) 3 }}') == "12 true"
    assert render('{{ range service "web" }}{{ if .Tags | contains "production" }}{{ .Node }}{{ end }}{{ end }}') \
        == "web01"
    assert render('{{ contains "ell" "hello" }} {{ contains "z" (split "," "a,b") }}') == "true false"


def test_to_json_of_an_exploded_tree() -> None:
    assert render('{{ tree "config" | explode | toJSON }}') == \
        '{"admin":{"port":"1234"},"maxconns":"5","minconns":"2"}'


def test_weights_example_index_and_or() -> None:
    t = ('{{ $weights := tree "weights" | explode }}{{ range service "release.web" }}'
         '{{ $weight := or (index $weights .Node) 100 }}server {{ .Node }} weight {{ $weight }}\n{{ end }}')
    assert render(t) == "server web01 weight 20\nserver web02 weight 100\n"


# ---- Go text/template syntax --------------------------------------------------------------------------

def test_trim_markers() -> None:
    assert render("a  {{- \"b\" -}}  \n c") == "abc"
    assert render("a {{-3}} b") == "a -3 b"  # "{{-3" is the number -3, not a trim marker


def test_comments_and_trimmed_comments() -> None:
    assert render("a{{/* hidden */}}b") == "ab"
    assert render("a \n{{- /* hidden */ -}}\n b") == "ab"


def test_if_else_if_else() -> None:
    t = '{{ $n := parseInt (key "service/redis/maxconns") }}{{ if gt $n 20 }}big{{ else if gt $n 10 }}mid' \
        '{{ else }}small{{ end }}'
    assert render(t) == "mid"
    assert render('{{ if eq (key "user/name") "Bob" "Alice" }}known{{ end }}') == "known"
    assert render('{{ if and (keyExists "user/name") (not (keyExists "nope")) }}ok{{ end }}') == "ok"


def test_range_forms() -> None:
    assert render('{{ range $i, $p := ls "service/redis" }}{{ $i }}={{ $p.Key }} {{ end }}') == \
        "0=maxconns 1=minconns "
    assert render('{{ range ls "empty" }}x{{ else }}none{{ end }}') == "none"
    assert render('{{ range $k, $v := tree "config" | explode }}{{ $k }};{{ end }}') == "admin;maxconns;minconns;"
    assert render('{{ range $i, $x := split "," "a,b,c,d" }}{{ if eq $i 1 }}{{ continue }}{{ end }}'
                  '{{ if eq $x "d" }}{{ break }}{{ end }}{{ $x }}{{ end }}') == "ac"


def test_with_and_dot() -> None:
    assert render('{{ with keyOrDefault "nope" "" }}set{{ else }}unset{{ end }}') == "unset"
    assert render('{{ with key "user/name" }}hello {{ . }}{{ end }}') == "hello Alice"


def test_variables_assign_and_scope() -> None:
    assert render('{{ $x := "a" }}{{ if true }}{{ $x = "b" }}{{ $y := "c" }}{{ end }}{{ $x }}') == "b"
    assert 'undefined variable "$y"' in str(fails('{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}'))


def test_printf_and_print_values() -> None:
    assert render('{{ printf "%s:%d %q %5s|%-3s|" "a" 7 "b" "r" "l" }}') == 'a:7 "b"     r|l  |'
    assert render("{{ 1.5 }} {{ true }} {{ `raw\\n` }}") == "1.5 true raw\\n"
    assert "nil is not a command" in str(fails("{{ nil }}"))  # as Go's text/template says


def test_field_on_map_missing_is_no_value_but_on_record_is_an_error() -> None:
    assert render('{{ with tree "config" | explode }}{{ .nope }}{{ end }}') == "<no value>"
    e = fails('{{ range service "web" }}{{ .Bogus }}{{ end }}')
    assert "can't evaluate field Bogus" in str(e) and (e.line, e.col) == (1, 28)


# ---- errors and limits ---------------------------------------------------------------------------------

# Go's messages and positions: a parse error names the line, an execution error the line and column.
@pytest.mark.parametrize(("text", "where", "says"), [
    ("ok\n  {{ nosuch 1 }}", (2, 0), 'function "nosuch" not defined'),
    ("{{ if true }}x", (1, 0), "unexpected EOF"),
    ("x{{ end }}", (1, 0), "unexpected {{end}}"),
    ("{{ break }}", (1, 0), "{{break}} outside {{range}}"),
    ('{{ "abc }}', (1, 0), "unterminated quoted string"),
    ("{{ 1 2 }}", (1, 3), "can't give argument to non-function"),
    ("{{ key }}", (1, 3), "wrong number of args for key"),
    ("a\n{{ .Foo }}", (2, 3), "nil pointer evaluating"),
    ("{{ ( }}", (1, 0), "unclosed left paren"),
    ("{{ (key \"a\" }}", (1, 0), "unclosed left paren"),
    ("{{ x", (1, 0), "unclosed action"),
    ('{{ parseInt "x1" }}', (1, 3), "invalid syntax"),
    ('{{ parseInt "0x10" }}', (1, 3), "invalid syntax"),  # base 10 only, as consul-template
    ('{{ parseInt " 1" }}', (1, 3), "invalid syntax"),
])
def test_errors_name_line_and_column(text: str, where: tuple[int, int], says: str) -> None:
    e = fails(text)
    assert (e.line, e.col) == where and says in str(e), str(e)


def test_missing_key_is_its_own_error() -> None:
    with pytest.raises(MissingKey, match='key "nope" does not exist'):
        render('{{ key "nope" }}')


def test_output_and_iterations_are_bounded() -> None:
    big = FakeData({f"k/{i}": "x" * 1000 for i in range(50)})
    with pytest.raises(TemplateError, match="output larger than 10000 bytes"):
        asyncio.run(parse('{{ range tree "k" }}{{ .Value }}{{ end }}').render(big, max_output=10_000))
    with pytest.raises(TemplateError, match="range iterations"):
        asyncio.run(parse("{{ range 1000 }}{{ range 1000 }}{{ end }}{{ end }}").render(FakeData(),
                                                                                    max_iterations=10_000))
    with pytest.raises(TemplateError, match="template larger than"):
        parse("x" * (256 * 1024 + 1))
    with pytest.raises(TemplateError, match="nested deeper"):
        parse("{{ if true }}" * 10_000 + "{{ end }}" * 10_000)


def test_define_template_and_block_are_gos() -> None:
    text = '{{ define "row" }}{{ .Key }}={{ .Value }};{{ end }}{{ range tree "config" }}{{ template "row" . }}{{ end }}'
    assert render(text) == "admin/port=1234;maxconns=5;minconns=2;"
    assert render('{{ block "b" "x" }}[{{ . }}]{{ end }}') == "[x]"


def test_reads_are_recorded_for_the_dependencies() -> None:
    d = FakeData()
    render('{{ key "user/name" }}{{ range ls "service/redis" }}{{ end }}{{ range service "web" }}{{ end }}', d)
    assert d.read == ["key:user/name", "prefix:service/redis/", "service:web"]
