"""Platform staff: accounts with password + TOTP login, and the `/v1/admin` console API."""
