"""draplugin.linkquery against the real kernel: the hand-read facts must equal pyroute2's full decode
and iproute2's view, for every link of a netns, and a missing name must read as None."""

from __future__ import annotations

from devices_support import Scratch, ip_in, ip_json

from draplugin import netconf
from draplugin.linkquery import LinkBrief, NoReply
from draplugin.netns import entered


async def test_brief_equals_pyroute2_and_iproute2_for_every_link(scratch: Scratch) -> None:
    pod = scratch.netns()
    ip_in(
        pod,
        "link",
        "add",
        "ncq0",
        "mtu",
        "1400",
        "address",
        "02:00:00:0a:0b:0c",
        "type",
        "veth",
        "peer",
        "ncq1",
    )
    ip_in(pod, "link", "set", "ncq0", "alias", "netclaim: name=eth7 mtu=9000 mac=02:00:00:00:00:01 up=1")
    ip_in(pod, "link", "set", "ncq0", "up")
    ip_in(pod, "link", "set", "lo", "up")
    rows = {row["ifname"]: row for row in await ip_json(pod, "link", "show")}
    assert rows["ncq0"]["ifalias"].startswith("netclaim:")  # so the alias comparison below means something

    async with entered(pod) as ns:
        assert ns.query is not None
        for name, row in rows.items():
            quick = ns.query.get(name)
            (message,) = await ns.ipr.link("get", ifname=name)
            assert quick == LinkBrief.from_message(message)
            assert quick is not None
            assert (quick.index, quick.name, quick.mtu) == (row["ifindex"], name, row["mtu"])
            assert quick.address == row.get("address")
            assert quick.alias == row.get("ifalias")
        assert ns.query.get("absent0") is None
        assert await netconf.brief(ns, "absent0") is None


async def test_brief_falls_back_to_pyroute2_when_no_reply_is_queued(scratch: Scratch) -> None:
    pod = scratch.netns()

    class Silent:
        def get(self, name: str) -> LinkBrief | None:
            raise NoReply(name)

        def close(self) -> None:
            pass

    async with entered(pod) as ns:
        real = ns.query
        ns.query = Silent()  # type: ignore[assignment]
        try:
            seen = await netconf.brief(ns, "lo")
        finally:
            ns.query = real
        assert seen is not None and seen.name == "lo" and seen.index == 1
