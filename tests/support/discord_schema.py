"""Check what the bot sends to Discord against Discord's published OpenAPI description, plus the limits it can't state.

The spec is tests/fixtures/discord-openapi.json.gz (discord/discord-api-spec `specs/openapi.json`, MIT, see
discord-openapi.LICENSE). It is OpenAPI 3.1, whose schemas are JSON Schema 2020-12, so the whole document is
registered as one `referencing` resource and each request body is validated through a `$ref` pointing into it;
the `#/components/schemas/...` refs inside then resolve against the document.

    problems = discord_schema().validate("POST", "/channels/1/messages", body, files=[("chart.png", 1234)])
    discord_schema().check(...)  # the same, raising SchemaViolation
"""

from __future__ import annotations

import copy
import gzip
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).parents[1] / "fixtures" / "discord-openapi.json.gz"
SPEC_URI = "urn:discord-openapi"

MAX_EMBEDS = 10
MAX_EMBED_CHARS = 6000  # summed over all embeds of one message
MAX_ATTACHMENT_BYTES = 25 * 1024 * 1024
MAX_OPTION_DESCRIPTION = 100
MAX_CHOICES = 25
MAX_COMMAND_CHARS = 8000  # names, descriptions and choice names/values of one command, summed


class SchemaViolation(AssertionError):
    """What the bot sent would be refused by Discord."""


@dataclass(frozen=True)
class _Operation:
    method: str
    template: str
    pattern: re.Pattern[str]
    literal_chars: int  # how specific the template is: `/messages/@original` beats `/messages/{message_id}`
    pointer: str | None  # JSON pointer to the application/json request-body schema, if the operation has one


def _patch_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Relax the spec where it is stricter than Discord itself (each case was seen with discord.py 2.7 payloads)."""
    spec = copy.deepcopy(spec)
    schemas = spec["components"]["schemas"]
    # Snowflakes are strings in the spec, but Discord accepts integers too, and discord.py sends some as integers
    # (attachment ids are the file's index, `{"id": 0, "filename": ...}`; allowed_mentions user/role ids).
    snowflake = schemas["SnowflakeType"]
    schemas["SnowflakeType"] = {"anyOf": [snowflake, {"type": "integer", "minimum": 0}]}
    return spec


@cache
def discord_schema() -> DiscordSchema:
    """The validator for the bundled spec (loaded once per test session)."""
    with gzip.open(SPEC_PATH, "rt", encoding="utf-8") as fh:
        return DiscordSchema(json.load(fh))


class DiscordSchema:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = _patch_spec(spec)
        resource = DRAFT202012.create_resource(self.spec)
        self.registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)
        self.operations: list[_Operation] = []
        for template, item in self.spec["paths"].items():
            regex = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
            literal = len(re.sub(r"\{[^/]+?\}", "", template))
            for method, op in item.items():
                if method == "parameters" or not isinstance(op, dict):
                    continue
                content = op.get("requestBody", {}).get("content", {})
                pointer = None
                if "application/json" in content:
                    parts = ["", "paths", _escape(template), method, "requestBody", "content", "application~1json"]
                    pointer = "/".join([*parts, "schema"])
                self.operations.append(_Operation(method.upper(), template, re.compile(regex), literal, pointer))
        self.operations.sort(key=lambda op: -op.literal_chars)
        self._validators: dict[str, Draft202012Validator] = {}

    def operation(self, method: str, path: str) -> _Operation | None:
        """The spec's operation for a concrete request path such as `/channels/123/messages`."""
        for op in self.operations:
            if op.method == method.upper() and op.pattern.fullmatch(path):
                return op
        return None

    def _validator(self, pointer: str) -> Draft202012Validator:
        if pointer not in self._validators:
            ref = {"$ref": f"{SPEC_URI}#{quote(pointer, safe='/~')}"}
            self._validators[pointer] = Draft202012Validator(ref, registry=self.registry)
        return self._validators[pointer]

    def _resolve(self, pointer: str) -> Any:
        return self.registry.resolver().lookup(f"{SPEC_URI}#{quote(pointer, safe='/~')}").contents

    def _body_pointer(self, pointer: str, body: Any) -> str:
        """Narrow a top-level union (`anyOf` + `x-discord-union: oneOf`) to the branch the body's `type` selects.

        The spec marks these unions as oneOf in spirit but writes anyOf. A true oneOf would be wrong for the webhook
        execute body, whose two branches (IncomingWebhookRequestPartial / IncomingWebhookUpdateRequestPartial) overlap:
        every valid message satisfies both, so "exactly one" would reject them all. The interaction-callback branches
        are told apart by `type` (4/5 create a message, 6/7 update one, 8 autocomplete, 9 modal...), so when the body
        has a `type` we validate against the branch whose `type` enum holds it: same verdict as anyOf, but the error
        names the real problem instead of "not valid under any of the given schemas". Without a discriminator
        (webhook POST) the union stays an anyOf.
        """
        schema = self._resolve(pointer)
        branches = schema.get("anyOf") or schema.get("oneOf")
        if not branches or not isinstance(body, dict) or "type" not in body:
            return pointer
        keyword = "anyOf" if "anyOf" in schema else "oneOf"
        for index, branch in enumerate(branches):
            target = self._resolve_ref(branch)
            if body["type"] in target.get("properties", {}).get("type", {}).get("enum", ()):
                return f"{pointer}/{keyword}/{index}"
        return pointer

    def _resolve_ref(self, schema: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in schema:
            return self.registry.resolver().lookup(f"{SPEC_URI}{schema['$ref']}").contents
        return schema

    def validate(
        self, method: str, path: str, body: Any, files: Iterable[tuple[str, int]] = ()
    ) -> list[str]:
        """Everything Discord would refuse in this request. `files` are (file name, size in bytes) of uploads."""
        method = method.upper()
        problems: list[str] = []
        op = self.operation(method, path)
        if op is not None and op.pointer is not None and body is not None:
            validator = self._validator(self._body_pointer(op.pointer, body))
            for error in sorted(validator.iter_errors(body), key=lambda e: [str(p) for p in e.absolute_path]):
                problems += _describe(error)
        for filename, size in files:
            if size > MAX_ATTACHMENT_BYTES:
                problems.append(f"attachment {filename!r} is {size} bytes, more than {MAX_ATTACHMENT_BYTES}")
        template = op.template if op else ""
        if isinstance(body, dict):
            if template == "/interactions/{interaction_id}/{interaction_token}/callback":
                data = body.get("data")
                if isinstance(data, dict):
                    if body.get("type") in (4, 7):
                        problems += _message_problems(data, "data")
                    if body.get("type") == 8 and len(data.get("choices") or ()) > MAX_CHOICES:
                        problems.append(f"data.choices: more than {MAX_CHOICES} autocomplete choices")
            elif template.startswith(("/webhooks/", "/channels/{channel_id}/messages")) and method in ("POST", "PATCH"):
                problems += _message_problems(body, "body")
            elif template.endswith("/commands") and method == "POST":
                problems += _command_problems(body, "body")
        if isinstance(body, list) and template.endswith("/commands") and method == "PUT":
            for index, command in enumerate(body):
                if isinstance(command, dict):
                    problems += _command_problems(command, f"[{index}]")
        return problems

    def validate_object(self, schema: str, value: Any) -> list[str]:
        """What is wrong with `value` as the spec's `#/components/schemas/<schema>` (e.g. `MessageResponse`, the
        message a component interaction carries)."""
        validator = self._validator(f"/components/schemas/{_escape(schema)}")
        return [line for error in sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path])
                for line in _describe(error)]

    def check(self, method: str, path: str, body: Any, files: Iterable[tuple[str, int]] = ()) -> None:
        """Like validate(), raising SchemaViolation listing the problems."""
        problems = self.validate(method, path, body, files)
        if problems:
            raise SchemaViolation(f"{method} {path}:\n  " + "\n  ".join(problems))


def _escape(template: str) -> str:
    return template.replace("~", "~0").replace("/", "~1")


def _describe(error: ValidationError) -> list[str]:
    """One line per error; for a failed anyOf/oneOf, the reasons from the branch that fits the body best."""
    lines = []
    for leaf in _leaf_errors(error):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in leaf.absolute_path).lstrip(".")
        message = leaf.message if len(leaf.message) <= 200 else leaf.message[:150] + "... " + leaf.message[-40:]
        lines.append(f"{where or '(body)'}: {message}")
    return lines


def _leaf_errors(error: ValidationError) -> list[ValidationError]:
    if not error.context:
        return [error]
    branches: dict[Any, list[ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)

    def fit(errors: list[ValidationError]) -> tuple[bool, bool, int]:
        # A branch whose own `type` discriminator (or JSON type) does not match is the wrong branch; among the
        # rest, the one whose errors lie deepest in the body is the one the sender meant.
        discriminator_ok = not any(list(e.relative_path) == ["type"] for e in errors)
        not_just_type = not all(e.validator == "type" and not e.relative_path for e in errors)
        return discriminator_ok, not_just_type, max(len(e.relative_path) for e in errors)

    best = max(branches.values(), key=fit)
    return [leaf for sub in best for leaf in _leaf_errors(sub)]


def _message_problems(message: dict[str, Any], where: str) -> list[str]:
    problems: list[str] = []
    embeds = message.get("embeds") or []
    if len(embeds) > MAX_EMBEDS:
        problems.append(f"{where}.embeds: {len(embeds)} embeds, at most {MAX_EMBEDS}")
    total = sum(embed_chars(e) for e in embeds if isinstance(e, dict))
    if total > MAX_EMBED_CHARS:
        problems.append(f"{where}.embeds: {total} characters in embeds, at most {MAX_EMBED_CHARS} per message")
    return problems


def embed_chars(embed: dict[str, Any]) -> int:
    """The characters Discord counts against an embed's 6,000 (title, description, fields, footer, author)."""
    texts: list[Any] = [
        embed.get("title"),
        embed.get("description"),
        (embed.get("footer") or {}).get("text"),
        (embed.get("author") or {}).get("name"),
    ]
    for field in embed.get("fields") or ():
        texts += [field.get("name"), field.get("value")]
    return sum(len(t) for t in texts if isinstance(t, str))


def _valid_name(name: str) -> bool:
    """`^[-_\\p{L}\\p{N}]{1,32}$` (Python's re has no \\p{..}) and lowercase, as Discord wants for slash commands."""
    return (
        1 <= len(name) <= 32
        and all(c in "-_" or unicodedata.category(c)[0] in "LN" for c in name)
        and name == name.lower()
    )


def _command_problems(command: dict[str, Any], where: str) -> list[str]:
    problems: list[str] = []
    chat_input = command.get("type") in (None, 1)
    name = command.get("name")
    if chat_input and isinstance(name, str) and not _valid_name(name):
        problems.append(f"{where}.name: {name!r} must match ^[-_\\p{{L}}\\p{{N}}]{{1,32}}$ and be lowercase")
    if chat_input and len(command.get("description") or "") > MAX_OPTION_DESCRIPTION:
        problems.append(f"{where}.description: longer than {MAX_OPTION_DESCRIPTION} characters")
    problems += _option_problems(command.get("options") or [], f"{where}.options", chat_input)
    total = _command_chars(command)
    if total > MAX_COMMAND_CHARS:
        problems.append(f"{where}: {total} characters in names, descriptions and choices, at most {MAX_COMMAND_CHARS}")
    return problems


def _option_problems(options: Sequence[Any], where: str, chat_input: bool) -> list[str]:
    problems: list[str] = []
    for index, option in enumerate(options):
        if not isinstance(option, dict):
            continue
        here = f"{where}[{index}]"
        name = option.get("name")
        if chat_input and isinstance(name, str) and not _valid_name(name):
            problems.append(f"{here}.name: {name!r} must match ^[-_\\p{{L}}\\p{{N}}]{{1,32}}$ and be lowercase")
        if len(option.get("description") or "") > MAX_OPTION_DESCRIPTION:
            problems.append(f"{here}.description: longer than {MAX_OPTION_DESCRIPTION} characters")
        if len(option.get("choices") or ()) > MAX_CHOICES:
            problems.append(f"{here}.choices: more than {MAX_CHOICES} choices")
        problems += _option_problems(option.get("options") or [], f"{here}.options", chat_input)
    return problems


def _command_chars(node: dict[str, Any]) -> int:
    total = len(node.get("name") or "") + len(node.get("description") or "")
    for choice in node.get("choices") or ():
        total += len(str(choice.get("name", ""))) + len(str(choice.get("value", "")))
    return total + sum(_command_chars(o) for o in node.get("options") or () if isinstance(o, dict))


def assert_within_embed_limits(embed: dict[str, Any]) -> None:
    """Discord's embed limits, for messages that never pass through the local Discord (the console's)."""
    assert len(embed.get("title", "")) <= 256
    assert len(embed.get("description", "")) <= 4096
    assert len(embed.get("fields", [])) <= 25
    for f in embed.get("fields", []):
        assert 0 < len(f["name"]) <= 256 and 0 < len(f["value"]) <= 1024
    assert len(embed.get("footer", {}).get("text", "")) <= 2048
    assert embed_chars(embed) <= MAX_EMBED_CHARS
