"""Limits shared by the testbed tests, in a module of its own: ``from conftest import ...`` resolves to
whichever conftest pytest imported first (tests/faults and tests/fuzz have their own)."""

# A TCG guest boots in ~5 s on an idle machine; 60-100 s were measured with eight sessions on 2 cores.
BOOT_TIMEOUT_S = 300
