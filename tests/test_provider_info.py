"""Provider info is valid for Airflow, everything it names exists, and both form declarations agree."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import airflow
import jsonschema
import pytest

from airflow_provider_m3ter import __version__, get_provider_info
from airflow_provider_m3ter.compat import AIRFLOW_VERSION
from airflow_provider_m3ter.connection_form import CONN_FIELDS, UI_FIELD_BEHAVIOUR

AIRFLOW_DIR = Path(airflow.__file__).parent


def _schema(name: str) -> dict[str, Any]:
    return json.loads((AIRFLOW_DIR / name).read_text())


def _import(dotted: str) -> Any:
    module, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def test_provider_info_validates_against_airflows_schema() -> None:
    info = get_provider_info()
    errors = sorted(
        e.message for e in jsonschema.Draft7Validator(_schema("provider_info.schema.json")).iter_errors(info)
    )
    assert errors == []
    assert info["package-name"] == "airflow-provider-m3ter"
    assert info["versions"] == [__version__]


def test_connection_type_entry_validates_against_the_provider_yaml_schema() -> None:
    # provider_info.schema.json does not describe conn-fields / ui-field-behaviour; provider.yaml's does
    item_schema = _schema("provider.yaml.schema.json")["properties"]["connection-types"]["items"]
    (entry,) = get_provider_info()["connection-types"]
    errors = sorted(e.message for e in jsonschema.Draft7Validator(item_schema).iter_errors(entry))
    assert errors == []
    assert entry["conn-fields"] == CONN_FIELDS
    assert entry["ui-field-behaviour"] == UI_FIELD_BEHAVIOUR


def test_hook_class_matches_the_connection_type_entry() -> None:
    (entry,) = get_provider_info()["connection-types"]
    hook = _import(entry["hook-class-name"])
    assert hook.conn_type == entry["connection-type"] == "m3ter"
    assert hook.hook_name == entry["hook-name"] == "m3ter"
    assert hook.conn_name_attr == "m3ter_conn_id"
    assert hook.default_conn_name == "m3ter_default"
    assert callable(hook.test_connection)


def test_every_named_module_and_class_imports() -> None:
    info = get_provider_info()
    modules = [
        m
        for section in ("hooks", "operators", "sensors", "triggers")
        for group in info[section]
        for m in group["python-modules"]
    ]
    problems = []
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as err:  # report every broken name at once
            problems.append(f"{module}: {type(err).__name__}: {err}")
    for link in info["extra-links"]:
        try:
            _import(link)
        except Exception as err:
            problems.append(f"{link}: {type(err).__name__}: {err}")
    assert problems == []


def test_providers_manager_finds_the_provider_and_its_hook() -> None:
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    assert pm.providers["airflow-provider-m3ter"].version == __version__
    if AIRFLOW_VERSION >= (3, 2):  # the task SDK's own registry of hooks
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

        assert ProvidersManagerTaskRuntime().hooks["m3ter"].hook_name == "m3ter"
    else:
        assert pm.hooks["m3ter"].hook_name == "m3ter"
    assert "airflow_provider_m3ter.links.M3terConsoleLink" in pm.extra_links_class_names


@pytest.mark.skipif(
    AIRFLOW_VERSION < (3, 2),
    reason="version-gated: connection forms declared in provider info exist from Airflow 3.2",
)
def test_providers_manager_reads_the_form_from_provider_info() -> None:
    from airflow.providers_manager import ProvidersManager, _ensure_prefix_for_placeholders

    from airflow_provider_m3ter.hooks.m3ter import M3terHook

    pm = ProvidersManager()
    widgets = {k: v for k, v in pm.connection_form_widgets.items() if k.startswith("extra__m3ter__")}
    assert sorted(widgets) == sorted(f"extra__m3ter__{name}" for name in CONN_FIELDS)
    for name, spec in CONN_FIELDS.items():
        field = widgets[f"extra__m3ter__{name}"].field
        assert field["schema"]["title"] == spec["label"]
        # nothing is pre-filled as a value: the form would store it (issue 11, item 4)
        assert field["value"] is None, name
        assert "default" not in field["schema"], name
    # the hook method (used by older Airflow) says what provider info says
    assert pm.field_behaviours["m3ter"] == _ensure_prefix_for_placeholders(
        M3terHook.get_ui_field_behaviour(), "m3ter"
    )
    jsonschema.validate(
        M3terHook.get_ui_field_behaviour(), _schema("customized_form_field_behaviours.schema.json")
    )
    assert "airflow_provider_m3ter.links.M3terConsoleLink" in pm.extra_links_class_names


class _Unbound:
    """Stands in for wtforms' UnboundField: remembers the field class and its arguments."""

    def __init__(self, field_class: type, args: tuple, kwargs: dict) -> None:
        self.field_class, self.args, self.kwargs = field_class, args, kwargs


def _fake_web_modules() -> dict[str, types.ModuleType]:
    """Minimal wtforms / flask_appbuilder / flask_babel, for an install without the web UI."""

    def field(name: str) -> type:
        def new(cls: type, *args: Any, **kwargs: Any) -> _Unbound:
            return _Unbound(cls, args, kwargs)

        return type(name, (), {"__new__": new})

    wtforms = types.ModuleType("wtforms")
    for name in ("BooleanField", "IntegerField", "StringField", "PasswordField"):
        setattr(wtforms, name, field(name))
    validators = types.ModuleType("wtforms.validators")
    validators.Optional = type("Optional", (), {})  # type: ignore[attr-defined]
    wtforms.validators = validators  # type: ignore[attr-defined]
    fab = types.ModuleType("flask_appbuilder")
    fieldwidgets = types.ModuleType("flask_appbuilder.fieldwidgets")
    fieldwidgets.BS3TextFieldWidget = type("BS3TextFieldWidget", (), {})  # type: ignore[attr-defined]
    fab.fieldwidgets = fieldwidgets  # type: ignore[attr-defined]
    babel = types.ModuleType("flask_babel")
    babel.lazy_gettext = str  # type: ignore[attr-defined]
    return {
        "wtforms": wtforms,
        "wtforms.validators": validators,
        "flask_appbuilder": fab,
        "flask_appbuilder.fieldwidgets": fieldwidgets,
        "flask_babel": babel,
    }


WEB_UI_INSTALLED = all(importlib.util.find_spec(m) for m in ("wtforms", "flask_appbuilder", "flask_babel"))


def test_form_widgets_are_empty_without_the_web_ui() -> None:
    from airflow_provider_m3ter.hooks.m3ter import M3terHook

    widgets = M3terHook.get_connection_form_widgets()
    assert (widgets == {}) is (not WEB_UI_INSTALLED)


def test_form_widgets_agree_with_conn_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_m3ter.hooks.m3ter import M3terHook

    if not WEB_UI_INSTALLED:
        for name, module in _fake_web_modules().items():
            monkeypatch.setitem(sys.modules, name, module)
    widgets = M3terHook.get_connection_form_widgets()
    assert sorted(widgets) == sorted(CONN_FIELDS)
    expected_class = {
        "boolean": "BooleanField",
        "integer": "IntegerField",
        "number": "StringField",
        "string": "StringField",
    }
    for name, spec in CONN_FIELDS.items():
        widget = widgets[name]
        kind = next(t for t in spec["schema"]["type"] if t != "null")
        assert widget.field_class.__name__ == expected_class[kind], name
        assert str(widget.args[0]) == spec["label"], name
        assert widget.kwargs.get("description", "") == spec.get("description", ""), name
        if kind == "boolean":
            assert widget.kwargs.get("default") is None, name


def test_no_form_field_carries_a_default_value() -> None:
    """Issue 11, item 4: a JSON-schema default becomes a stored value; defaults live in descriptions."""
    for name, spec in CONN_FIELDS.items():
        assert "default" not in spec["schema"], name
    assert CONN_FIELDS["ingest_url"]["schema"]["examples"] == ["https://ingest.m3ter.com"]
    assert UI_FIELD_BEHAVIOUR["placeholders"]["ingest_url"] == "https://ingest.m3ter.com"
