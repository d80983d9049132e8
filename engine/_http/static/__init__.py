"""The web UI's page shells, stylesheet and script (package data read by ``engine._http.ui``)."""
