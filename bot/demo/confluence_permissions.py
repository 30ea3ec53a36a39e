"""Who may read what, in SampleConfluence (issue 15): users with emails, groups and members, space read
permissions (v2 `/spaces/{id}/permissions`), page read restrictions settable without a version change (as on
Cloud: restricting a page doesn't edit it), and the v1 group, member and email endpoints askdocs reads.

A space with no permissions set is readable by the all-users group (`confluence-users`, of which every added
user is a member), as a new Cloud space is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

JSON = dict[str, Any]
ALL_USERS = "confluence-users"


@dataclass
class EmulatedGroup:
    group_id: str
    name: str
    members: set[str] = field(default_factory=set)  # account ids


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"statusCode": status, "message": message}, status=status)


class PermissionState:
    """The permission half of SampleConfluence's state, and the handlers that serve it."""

    def _init_permissions(self) -> None:
        self.groups: dict[str, EmulatedGroup] = {}
        self.space_readers: dict[str, set[str]] = {}  # space key -> {"user:<id>", "group:<id>"}
        self.read_restrictions: dict[str, tuple[frozenset[str], frozenset[str]]] = {}  # page -> (users, groups)
        self.hidden_from_search: set[str] = set()  # a search index behind: CQL leaves these pages out
        self.add_group(ALL_USERS, group_id="all-users-0001")

    # ---- state --------------------------------------------------------------------------------------

    def add_group(self, name: str, *, group_id: str | None = None) -> str:
        ident = group_id or f"grp-{len(self.groups) + 1:04d}-{name}"
        self.groups[ident] = EmulatedGroup(ident, name)
        return ident

    def group_id(self, name: str) -> str:
        return next(g.group_id for g in self.groups.values() if g.name == name)

    def add_member(self, group: str, account_id: str) -> None:
        self.groups[self.group_id(group)].members.add(account_id)

    def remove_member(self, group: str, account_id: str) -> None:
        self.groups[self.group_id(group)].members.discard(account_id)

    def set_space_readers(self, space_key: str, *, users: Iterable[str] = (), groups: Iterable[str] = ()) -> None:
        """Who may read the space (by account id and group name); replaces the default all-users group."""
        self.space_readers[space_key] = {f"user:{u}" for u in users} | {f"group:{self.group_id(g)}" for g in groups}

    def restrict_page(self, page_id: str, *, users: Iterable[str] = (), groups: Iterable[str] = ()) -> None:
        """Read restrictions (account ids, group names); the page's version and dates stay as they are."""
        self.read_restrictions[page_id] = (frozenset(users), frozenset(groups))

    def unrestrict_page(self, page_id: str) -> None:
        self.read_restrictions.pop(page_id, None)

    # ---- wire ---------------------------------------------------------------------------------------

    def restriction_json(self, page_id: str, legacy_owner: JSON | None) -> JSON:
        """`restrictions.read.restrictions` as v1 expands it (Cloud: users by accountId, groups with id)."""
        users, groups = self.read_restrictions.get(page_id, (frozenset(), frozenset()))
        user_items = [{"type": "known", "accountId": u} for u in sorted(users)]
        if legacy_owner is not None and not users and not groups:
            user_items = [legacy_owner]
        group_items = [{"type": "group", "name": g, "id": self.group_id(g)} for g in sorted(groups)]
        return {
            "user": {"results": user_items, "start": 0, "limit": 200, "size": len(user_items)},
            "group": {"results": group_items, "start": 0, "limit": 200, "size": len(group_items)},
        }

    def add_permission_routes(self, app: web.Application, prefix: str) -> None:
        """v1 routes under `prefix` (Cloud `/wiki`, the gateway); v2 space permissions under `prefix/api/v2`."""
        app.router.add_get(prefix + "/rest/api/group", self._v1_groups)
        app.router.add_get(prefix + "/rest/api/group/{group_id}/membersByGroupId", self._v1_group_members)
        app.router.add_get(prefix + "/rest/api/user/email/bulk", self._v1_emails)
        app.router.add_get(prefix + "/api/v2/spaces/{space_id}/permissions", self._v2_space_permissions)

    def _space_key_by_id(self, space_id: str) -> str | None:
        spaces: dict[str, Any] = getattr(self, "spaces", {})
        return next((key for key, space in spaces.items() if space.space_id == space_id), None)

    async def _v2_space_permissions(self, request: web.Request) -> web.Response:
        key = self._space_key_by_id(request.match_info["space_id"])
        if key is None:
            return _json_error(404, "Space not found")
        readers = self.space_readers.get(key, {f"group:{self.group_id(ALL_USERS)}"})
        results: list[JSON] = []
        for n, principal in enumerate(sorted(readers)):
            kind, _, ident = principal.partition(":")
            for op, target in (("read", "space"), ("create", "page")):  # askdocs must keep only read/space
                results.append({"id": f"{n}-{op}", "principal": {"type": kind, "id": ident},
                                "operation": {"key": op, "targetType": target}})
        return web.json_response({"results": results, "_links": {}})

    async def _v1_groups(self, request: web.Request) -> web.Response:
        results = [{"type": "group", "name": g.name, "id": g.group_id} for g in self.groups.values()]
        return web.json_response({"results": results, "start": 0, "limit": 200, "size": len(results),
                                  "_links": {}})

    async def _v1_group_members(self, request: web.Request) -> web.Response:
        group = self.groups.get(request.match_info["group_id"])
        if group is None:
            return _json_error(404, "Group not found")
        results = [{"type": "known", "accountId": a, "accountType": "atlassian"} for a in sorted(group.members)]
        return web.json_response({"results": results, "start": 0, "limit": 200, "size": len(results),
                                  "_links": {}})

    async def _v1_emails(self, request: web.Request) -> web.Response:
        users: dict[str, Any] = getattr(self, "users", {})
        wanted = request.query.getall("accountId", [])
        return web.json_response([{"accountId": a, "email": users[a].email} for a in wanted
                                  if a in users and users[a].email])
