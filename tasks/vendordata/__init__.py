"""``novahooks vendordata``: registration before first boot on Nova 22 and later.

Nova removed its hooks in Victoria; what it kept for "something must exist before
the guest boots" is dynamic vendordata: when an instance's metadata is built,
Nova's DynamicJSON provider POSTs the instance's identity (no addresses) to a
URL and hands the JSON answer to the guest in ``vendor_data2.json``. This
package is that URL:

* ``request``: Nova's body as the InstanceEvent every driver takes;
* ``credentials``: the join credential of each instance, encrypted at rest;
* ``join``: which credential a VM gets (per OS and directory), and making it;
* ``odj``: offline domain-join blobs from Samba's ``net offlinejoin provision``;
* ``service``: one answer: policy, the pre-boot steps, the credential, the audit;
* ``web``: the HTTP side (Falcon on cheroot, TLS, http_basic);
* ``probe``: what ``novahooks check`` asks the running service.
"""
