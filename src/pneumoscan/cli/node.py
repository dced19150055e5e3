"""``pneumoscan dicom-node`` (a DICOM node a PACS sends studies to) and ``pneumoscan worklist`` (its studies by
urgency): their arguments and what they run."""

from __future__ import annotations

import json

# The node's PyTorch threads share two cores with its DICOM side and often the PACS: waiting passively (not
# spinning) when one of them is held up saved 30% of the screening's CPU time (docs/experiments.md)
PASSIVE = "PASSIVE"


def add_node_commands(sub) -> None:
    p = sub.add_parser("dicom-node", help="a DICOM node: studies in from a PACS (C-STORE), a report and an overlay "
                                          "back into each study",
                       description="Receive chest X-rays from a PACS or modality (C-STORE; C-ECHO answers), keep each "
                                   "in a durable inbox before answering, screen them with the model and send a "
                                   "Structured Report and a Secondary Capture of the overlay back into the same study "
                                   "(--send-to). Killed and started again on the same inbox, it resumes without "
                                   "losing or repeating anything. Stop it with Ctrl-C.")
    p.add_argument("model", help="a run folder, model.pt or exported model.onnx")
    p.add_argument("--inbox", default="dicom-inbox", help="where received instances, results and the queue are kept "
                                                          "(default dicom-inbox)")
    p.add_argument("--ae-title", default="PNEUMOSCAN", help="this node's AE title (default PNEUMOSCAN)")
    p.add_argument("--port", type=int, default=11112, help="the DICOM port to listen on (default 11112)")
    p.add_argument("--host", default="0.0.0.0", help="the address to listen on (default all)")
    p.add_argument("--send-to", default="", metavar="HOST:PORT:AET|URL",
                   help="the PACS that receives the results: by C-STORE, e.g. localhost:4242:ORTHANC, or by STOW-RS "
                        "to its DICOMweb root, e.g. http://localhost:8042/dicom-web (default: keep them in the inbox)")
    p.add_argument("--batch-size", type=int, default=16, help="instances screened together (default 16)")
    p.add_argument("--gsps", action="store_true",
                   help="also send a Grayscale Softcopy Presentation State per scored film: the lung outline, the "
                        "heatmap's contours and the outcome drawn on the original film as layers a viewer can "
                        "switch on and off (about 30 ms more a film)")
    p = sub.add_parser("worklist", help="a DICOM node's studies, most urgent first",
                       description="The studies a DICOM node received, ordered by the screened probability (highest "
                                   "first), refused and flagged ones marked, with the time from arrival to result.")
    p.add_argument("inbox", help="the node's inbox folder")
    p.add_argument("--json", action="store_true", help="print it as JSON")


def cmd_dicom_node(args) -> int:
    import os
    import signal
    import sys
    import threading

    from pneumoscan.node.network import parse_peer
    from pneumoscan.node.run import NodeSettings, run_node

    if args.send_to:
        parse_peer(args.send_to)  # a mistyped peer ends here, in one line
    if "OMP_WAIT_POLICY" not in os.environ and sys.argv[1:2] == ["dicom-node"]:  # read as PyTorch loads: the
        # command starts again with it, in the same process
        os.environ["OMP_WAIT_POLICY"] = PASSIVE
        os.execv(sys.executable, [sys.executable, "-m", "pneumoscan.cli", *sys.argv[1:]])
    stop = threading.Event()
    for name in ("SIGINT", "SIGTERM"):  # Ctrl-C or a service manager: finish the batch in hand, then stop
        signal.signal(getattr(signal, name), lambda number, frame: stop.set())
    run_node(NodeSettings(model=args.model, inbox=args.inbox, ae_title=args.ae_title, port=args.port, host=args.host,
                          send_to=args.send_to, batch_size=args.batch_size, gsps=args.gsps), stop)
    return 0


def cmd_worklist(args) -> int:
    from pathlib import Path

    from pneumoscan.node.worklist import format_worklist, worklist

    if not (Path(args.inbox) / "inbox.sqlite").is_file():
        raise FileNotFoundError(f"{args.inbox}: no DICOM node inbox here (pneumoscan dicom-node --inbox DIR makes one)")
    entries = worklist(args.inbox)
    print(json.dumps(entries, indent=2) if args.json else format_worklist(entries))
    return 0
