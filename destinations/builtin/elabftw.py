"""eLabFTW (REST API v2): one experiment per session, with the XML attached.

Keeps NexusLIMS's title, HTML body, tags and extra fields, and links to the
CDCS record when CDCS succeeded first. The experiment and the XML upload (by
the record's checksum) go into the export's call log as soon as they exist, so
a later attempt adds only what is missing, without searching. A tag
``nx-session:<session id>`` marks the experiment so an attempt whose create
call went out without an answer finds it instead of creating a second one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime
from typing import Any

from pydantic import Field, SecretStr, field_validator

from destinations.builtin.session_summary import cdcs_url, session_summary_html, session_user
from destinations.contract import ExportContext, ExportResult
from destinations.settings import NxSettings
from destinations.toolkit.http import (
    HttpSettings,
    UnexpectedAnswer,
    join_url,
    parse_json,
    request,
)
from destinations.toolkit.resume import Resume
from destinations.toolkit.service import ServiceDestination, guarded_export, record_bytes

logger = logging.getLogger(__name__)

XML_COMMENT = "NexusLIMS XML record"
CONTENT_TYPE_HTML = 1  # HTML, not Markdown: eLabFTW issue 6416
SEARCH_LIMIT = 50


# Named in messages when its host cannot be reached.
URL_SETTING = "NX_ELABFTW_URL"


class ELabFTWSettings(NxSettings):
    """NexusLIMS's eLabFTW settings."""

    url: str = Field(default="", validation_alias=URL_SETTING)
    api_key: SecretStr = Field(default=SecretStr(""), validation_alias="NX_ELABFTW_API_KEY")
    experiment_category: int | None = Field(
        default=None, validation_alias="NX_ELABFTW_EXPERIMENT_CATEGORY"
    )
    experiment_status: int | None = Field(
        default=None, validation_alias="NX_ELABFTW_EXPERIMENT_STATUS"
    )

    @field_validator("experiment_category", "experiment_status", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """An empty variable in a ``.env`` file means "not set"."""
        return None if value == "" else value


def session_tag(context: ExportContext) -> str:
    """The tag that identifies a session's experiment."""
    return f"nx-session:{context.session_identifier}"


def experiment_title(context: ExportContext) -> str:
    """NexusLIMS's experiment title."""
    return f"NexusLIMS - {context.instrument_pid} - {context.session_identifier}"


class ELabFTWDestination(ServiceDestination):
    """Create an eLabFTW experiment per session."""

    name = "elabftw"
    priority = 85
    depends_on = ("cdcs",)

    def __init__(self) -> None:
        self.settings = ELabFTWSettings()
        self.http = HttpSettings()

    def required(self) -> list[tuple[str, str]]:
        return [("NX_ELABFTW_URL", self.settings.url),
                ("NX_ELABFTW_API_KEY", self.settings.api_key.get_secret_value())]  # fmt: skip

    def check_service(self) -> str | None:
        """List one experiment: the URL and the key work."""
        answer = self._json("GET", self._api("experiments"), "list experiments",
                            params={"limit": 1, "offset": 0})  # fmt: skip
        if not isinstance(answer, list):
            return "elabftw: list experiments: unexpected answer: not a list"
        return None

    def export(self, context: ExportContext) -> ExportResult:
        """Create the experiment and attach the XML; raise only ``TransientExportError``."""
        return guarded_export(self.name, context, self._export)

    def find_existing(self, context: ExportContext) -> ExportResult | None:
        """The experiment an earlier attempt created for this session, if any."""
        experiment_id = self._find_experiment_id(context)
        if experiment_id is None:
            return None
        return self._success(experiment_id, found_existing=True)

    def _export(self, context: ExportContext) -> ExportResult:
        xml = record_bytes(self.name, context)
        resume = Resume(context)
        experiment_id, existed = resume.obtain(
            "experiment",
            lambda: self._create_experiment(context),
            lambda: self._find_experiment_id(context),
        )
        # A rebuilt record has another checksum: it is attached too, never skipped.
        xml_key = f"xml:{hashlib.sha256(xml).hexdigest()[:16]}"
        upload = resume.done(xml_key)
        if upload is None and existed and resume.may_exist(xml_key):
            found = self._xml_upload_id(experiment_id)
            upload = resume.remember(xml_key, found) if found else None
        if upload is None:
            resume.create(xml_key, lambda: self._attach_xml(experiment_id, context, xml))
        return self._success(experiment_id, found_existing=existed)

    def _create_experiment(self, context: ExportContext) -> str:
        call = "create experiment"
        body: dict[str, Any] = {
            "title": experiment_title(context),
            "body": experiment_body(context),
            "tags": experiment_tags(context),
            "metadata": extra_fields(context),
            "content_type": CONTENT_TYPE_HTML,
        }
        if self.settings.experiment_category is not None:
            body["category"] = self.settings.experiment_category
        if self.settings.experiment_status is not None:
            body["status"] = self.settings.experiment_status
        response = request(
            "POST", self._api("experiments"), destination=self.name, call=call,
            headers=self._headers(), json_body=body, settings=self.http, url_setting=URL_SETTING,
        )
        return _id_from_location(response.headers.get("Location"), call)

    def _attach_xml(self, experiment_id: str, context: ExportContext, xml: bytes) -> str:
        """Upload the XML; the upload's id (from ``Location``), or "attached" without one."""
        response = request(
            "POST", self._api("experiments", experiment_id, "uploads"),
            destination=self.name, call="attach XML record", headers=self._headers(),
            files={"file": (context.xml_file_path.name, xml, "application/xml")},
            data={"comment": XML_COMMENT}, settings=self.http, url_setting=URL_SETTING,
        )
        location = (response.headers.get("Location") or "").rstrip("/").rsplit("/", 1)[-1]
        return location if location.isdigit() else "attached"

    def _find_experiment_id(self, context: ExportContext) -> str | None:
        experiments = self._json(
            "GET", self._api("experiments"), "search experiments",
            params={"limit": SEARCH_LIMIT, "offset": 0, "q": context.session_identifier},
        )
        if not isinstance(experiments, list):
            raise UnexpectedAnswer("elabftw: search experiments: unexpected answer: not a list")
        for experiment in experiments:
            if isinstance(experiment, dict) and _is_session_experiment(experiment, context):
                return str(experiment["id"])
        return None

    def _xml_upload_id(self, experiment_id: str) -> str | None:
        """The id of an XML record already attached to the experiment, if any."""
        experiment = self._json("GET", self._api("experiments", experiment_id), "read experiment")
        uploads = experiment.get("uploads") if isinstance(experiment, dict) else None
        for upload in uploads or []:
            if isinstance(upload, dict) and upload.get("comment") == XML_COMMENT:
                return str(upload.get("id") or "attached")
        return None

    def _json(self, method: str, url: str, call: str, params: dict[str, Any] | None = None) -> Any:
        response = request(
            method, url, destination=self.name, call=call, headers=self._headers(),
            params=params, settings=self.http, url_setting=URL_SETTING,
        )
        return parse_json(response, destination=self.name, call=call)

    def _api(self, *parts: str) -> str:
        return join_url(self.settings.url, "api/v2", *parts)

    def _headers(self) -> dict[str, str]:
        # eLabFTW wants the raw key, without "Bearer" or "Token".
        return {"Authorization": self.settings.api_key.get_secret_value()}

    def _success(self, experiment_id: str, found_existing: bool = False) -> ExportResult:
        return ExportResult(
            success=True,
            destination_name=self.name,
            record_id=experiment_id,
            record_url=(
                f"{join_url(self.settings.url, 'experiments.php')}?mode=view&id={experiment_id}"
            ),
            metadata={"experiment_id": experiment_id, "found_existing": found_existing},
        )



def experiment_tags(context: ExportContext) -> list[str]:
    """NexusLIMS's tags plus the session tag used to find the experiment again."""
    tags = ["NexusLIMS", context.instrument_pid]
    user = session_user(context)
    if user:
        tags.append(user)
    tags.append(session_tag(context))
    return tags


def experiment_body(context: ExportContext) -> str:
    """The HTML body: session details, the CDCS link, a note on the attachment."""
    parts = session_summary_html(context, "Session Details", links_heading="Related Records")
    parts.append("<p>The NexusLIMS XML record is attached to this experiment.</p>")
    return "\n".join(parts)


def _field(value: str, position: int, group: int, kind: str = "text") -> dict[str, Any]:
    return {"type": kind, "value": value, "position": position, "group_id": group}


def _local(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M")


def extra_fields(context: ExportContext) -> dict[str, Any]:
    """The experiment's metadata in eLabFTW's extra-fields schema."""
    fields: dict[str, Any] = {
        "Session ID": {
            **_field(context.session_identifier, 1, 1),
            "description": "NexusLIMS session identifier",
        },
        "Instrument": {
            **_field(context.instrument_pid, 2, 1),
            "description": "Instrument persistent identifier",
        },
        "Start Time": _field(_local(context.dt_from), 3, 1, "datetime-local"),
        "End Time": _field(_local(context.dt_to), 4, 1, "datetime-local"),
        "User": _field(session_user(context) or "", 5, 1),
    }
    link = cdcs_url(context)
    if link:
        fields["CDCS Record"] = _field(link, 6, 2, "url")
    return {
        "extra_fields": fields,
        "elabftw": {
            "display_main_text": True,
            "extra_fields_groups": [
                {"id": 1, "name": "Session Information"},
                {"id": 2, "name": "Related Records"},
            ],
        },
    }


def _is_session_experiment(experiment: dict[str, Any], context: ExportContext) -> bool:
    """Whether an experiment is this session's: by its tag, else its Session ID field."""
    if session_tag(context) in _tags_of(experiment):
        return True
    session_field = metadata_of(experiment).get("extra_fields", {}).get("Session ID", {})
    return (
        isinstance(session_field, dict)
        and session_field.get("value") == context.session_identifier
        and experiment.get("title") == experiment_title(context)
    )


def _tags_of(experiment: dict[str, Any]) -> list[str]:
    """An experiment's tags, which eLabFTW returns as a list or as ``"a|b"``."""
    tags = experiment.get("tags")
    if isinstance(tags, str):
        return tags.split("|")
    if isinstance(tags, list):
        return [str(tag) for tag in tags]
    return []


def _id_from_location(location: str | None, call: str) -> str:
    """The new entity's id: the last segment of the ``Location`` header."""
    last = (location or "").rstrip("/").rsplit("/", 1)[-1]
    if not last.isdigit():
        raise UnexpectedAnswer(f"elabftw: {call}: unexpected answer: no id in the Location header")
    return last


def metadata_of(experiment: dict[str, Any]) -> dict[str, Any]:
    """An experiment's metadata, which eLabFTW may return as a JSON string."""
    metadata = experiment.get("metadata")
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except json.JSONDecodeError:
            return {}
    return metadata if isinstance(metadata, dict) else {}
