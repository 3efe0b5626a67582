"""The LabArchives calls that read and write a notebook: tree levels, pages, entries.

Each is one signed, spaced call through ``LabArchivesClient``; the layout
(which folders, which page) is ``destinations.builtin.labarchives.destination``'s business.
"""

from __future__ import annotations

from dataclasses import dataclass

from destinations.builtin.labarchives.client import LabArchivesClient, required_text

XML_CAPTION = "NexusLIMS XML record"


@dataclass
class PageState:
    """What a notebook page holds for a session."""

    page_id: str | None = None
    text_eid: str | None = None
    attachment_eid: str | None = None


class NotebookTree:
    """Calls on one account's notebooks."""

    def __init__(self, client: LabArchivesClient) -> None:
        self.client = client

    def find_node(self, nbid: str, parent: str, text: str, is_page: bool) -> str | None:
        """The tree id of the folder or page named ``text`` directly under ``parent``."""
        answer = self.client.call("GET", "tree_tools", "get_tree_level", "list notebook level",
                                  {"nbid": nbid, "parent_tree_id": parent})
        for node in answer.iter("level-node"):
            node_is_page = (node.findtext("is-page") or "").strip().lower() == "true"
            if node.findtext("display-text") == text and node_is_page == is_page:
                tree_id = node.findtext("tree-id")
                if tree_id:
                    return tree_id
        return None

    def insert_node(self, nbid: str, parent: str, text: str, is_folder: bool) -> str:
        """Create a folder or page; its tree id."""
        call = "create folder" if is_folder else "create page"
        answer = self.client.call("GET", "tree_tools", "insert_node", call, {
            "nbid": nbid, "parent_tree_id": parent, "display_text": text,
            "is_folder": "true" if is_folder else "false",
        })
        return required_text(answer, "tree-id", call)

    def add_entry(self, nbid: str, page_id: str, html: str) -> str:
        """Add the HTML summary entry to a page; its eid."""
        call = "add summary entry"
        answer = self.client.call("POST", "entries", "add_entry", call, {}, data={
            "nbid": nbid, "pid": page_id, "entry_data": html, "part_type": "text entry",
        })
        return required_text(answer, "eid", call)

    def attach(self, nbid: str, page_id: str, filename: str, content: bytes) -> str:
        """Attach the XML record to a page; the attachment's eid."""
        call = "attach XML record"
        answer = self.client.call(
            "POST", "entries", "add_attachment", call,
            {"nbid": nbid, "pid": page_id, "filename": filename, "caption": XML_CAPTION},
            content=content,
        )
        return required_text(answer, "eid", call)

    def page_entries(self, nbid: str, page_id: str) -> PageState:
        """The summary entry and the XML attachment found on a page."""
        state = PageState(page_id=page_id)
        answer = self.client.call("GET", "tree_tools", "get_entries_for_page", "list page entries",
                                  {"nbid": nbid, "page_tree_id": page_id, "entry_data": "false"})
        for entry in answer.iter("entry"):
            eid = entry.findtext("eid")
            part_type = (entry.findtext("part-type") or "").lower()
            if eid and part_type == "text entry" and state.text_eid is None:
                state.text_eid = eid
            elif eid and "attachment" in part_type and state.attachment_eid is None:
                state.attachment_eid = eid
        return state
