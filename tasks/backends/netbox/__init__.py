"""What the NetBox IPAM and inventory drivers share: client, errors, custom fields."""
