"""What operators declare, parsed strictly into typed values: the ``anycast.*`` label
grammar (:mod:`.labels`) and health-check specs (:mod:`.checks`). Pure: no I/O."""
