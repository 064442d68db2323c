"""novahooks: register Nova VMs with a company's own systems."""

__version__ = "0.1.0"
