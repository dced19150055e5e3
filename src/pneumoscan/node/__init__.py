"""The DICOM node: a PACS sends studies (C-STORE), the node keeps them in a durable inbox (``node.inbox``),
screens them with the one screener (``node.screening``), sends a Structured Report and an overlay back into the
study (``node.results``, ``node.sender``) and keeps a worklist ordered by urgency (``node.worklist``);
``node.run`` starts it all (``pneumoscan dicom-node``)."""
