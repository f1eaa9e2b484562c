"""What people look at: reports and the live dashboard, reading studies through the mixopt API (issue 5)."""
