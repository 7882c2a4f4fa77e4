"""The sandbox's DNS server (``dns``): the Route 53 zone on the local AWS endpoint, served over UDP and TCP by dnslib,
so customers resolve names the way they do on a real platform (moto keeps the records but answers no DNS).

Weighted records: one answer, chosen by weight (a weight-0 set only when every weight is 0); a failover pair: the
PRIMARY's value; A, AAAA, SRV, TXT and CNAME as they are. The zone is re-read at most every ``ZONE_CACHE`` seconds.
"""
from __future__ import annotations

import logging
import os
import random
import threading
import time

from dnslib import QTYPE, RCODE, RR
from dnslib.server import BaseResolver, DNSServer

log = logging.getLogger(__name__)

ZONE_CACHE = 0.5


class Route53Resolver(BaseResolver):
    def __init__(self, route53, zone_id: str, zone: str) -> None:
        self.route53, self.zone_id, self.zone = route53, zone_id, zone.rstrip(".") + "."
        self.lock = threading.Lock()
        self.sets: list[dict] = []
        self.read_at = 0.0

    def record_sets(self) -> list[dict]:
        with self.lock:
            if time.monotonic() - self.read_at > ZONE_CACHE:
                try:
                    # One call without MaxItems (moto's paging breaks on weighted sets).
                    self.sets = self.route53.list_resource_record_sets(HostedZoneId=self.zone_id)["ResourceRecordSets"]
                    self.read_at = time.monotonic()
                except Exception as exc:  # noqa: BLE001 - served from the last copy; said in the log
                    log.warning("zone read failed: %s", exc)
            return self.sets

    def answer(self, name: str, qtype: str) -> list[dict]:
        sets = [s for s in self.record_sets() if s["Name"] == name and s["Type"] == qtype]
        weighted = [s for s in sets if "Weight" in s]
        if weighted:
            positive = [s for s in weighted if int(s["Weight"]) > 0]
            pool = positive or weighted
            chosen = random.choices(pool, weights=[max(int(s["Weight"]), 1) for s in pool])[0]
            return [chosen]
        failover = [s for s in sets if "Failover" in s]
        if failover:
            return [s for s in failover if s["Failover"] == "PRIMARY"][:1] or failover[:1]
        return sets

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname)
        qtype = QTYPE[request.q.qtype]
        if not name.endswith(self.zone):
            reply.header.rcode = RCODE.REFUSED
            return reply
        found = self.answer(name, qtype)
        if not found and not any(s["Name"] == name for s in self.record_sets()):
            reply.header.rcode = RCODE.NXDOMAIN
        for rrset in found:
            for value in rrset.get("ResourceRecords", []):
                reply.add_answer(*RR.fromZone(f"{name} {int(rrset.get('TTL', 60))} IN {qtype} {value['Value']}"))
        return reply


def run(address: tuple[str, int], route53, zone_id: str, zone: str, stopping: threading.Event) -> None:
    resolver = Route53Resolver(route53, zone_id, zone)
    servers = [DNSServer(resolver, address=address[0], port=address[1]),
               DNSServer(resolver, address=address[0], port=address[1], tcp=True)]
    for server in servers:
        server.start_thread()
    log.info("dns on %s:%s udp+tcp (pid %s), zone %s", *address, os.getpid(), zone)
    while not stopping.is_set():
        stopping.wait(0.5)
    for server in servers:
        server.stop()
