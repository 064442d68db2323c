"""Infoblox NIOS over WAPI: the session both Infoblox drivers (IPAM and DNS) share."""
