"""Run by the Python 3.8 interpreter of the Nova venv, under eventlet like Nova's services.

Prints one JSON line: which non-stdlib modules the hook side imported, and how
many events several processes of green threads appended to one outbox (its spool included).
"""

import eventlet

eventlet.monkey_patch()

import json  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import sqlite3  # noqa: E402
import sys  # noqa: E402
import sysconfig  # noqa: E402

STDLIB = os.path.realpath(sysconfig.get_paths()["stdlib"])


def third_party(names):
    found = []
    for name in names:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if not path or name.split(".")[0] == "novahooks":
            continue
        real = os.path.realpath(path)
        if real.startswith(STDLIB) and "site-packages" not in real:
            continue
        found.append(name)
    return sorted(found)


def fire(worker, count):
    from novahooks.nova.hooks import BuildInstanceHook

    def one(i):
        uuid = "00000000-0000-4000-8000-%06d%06d" % (worker, i)
        nw = [{"id": "p", "address": "fa:16:3e:00:00:01", "network": {"label": "private",
               "subnets": [{"ips": [{"address": "10.20.9.%d" % (i % 250 + 2), "type": "fixed",
                                     "version": 4}]}]}}]
        instance = {"uuid": uuid, "hostname": "g%d-%d" % (worker, i), "vm_state": "active",
                    "info_cache": {"network_info": nw}}
        BuildInstanceHook().post("active", object(), object(), instance)

    pool = eventlet.GreenPool(50)
    for i in range(count):
        pool.spawn_n(one, i)
    pool.waitall()


def main():
    before = set(sys.modules)
    import novahooks.nova.hooks  # noqa: F401
    import novahooks.settings  # noqa: F401
    imported = third_party(set(sys.modules) - before)
    processes, per_process = 4, 250
    procs = [multiprocessing.Process(target=fire, args=(w, per_process)) for w in range(processes)]
    for proc in procs:
        proc.start()
    fire(processes, per_process)
    for proc in procs:
        proc.join()
    path = os.environ["NOVAHOOKS_OUTBOX_PATH"]
    from novahooks.nova import spool
    spooled = [event.instance_uuid for name in spool.pending_files(path)
               for event in spool.read(name)]
    with sqlite3.connect(path) as conn:
        uuids = [row[0] for row in conn.execute("SELECT instance_uuid FROM events")] + spooled
    print(json.dumps({"python": sys.version.split()[0], "third_party": imported,
                      "events": len(uuids), "distinct": len(set(uuids)), "spooled": len(spooled),
                      "expected": (processes + 1) * per_process,
                      "eventlet_patched": eventlet.patcher.is_monkey_patched("thread")}))


if __name__ == "__main__":
    main()
