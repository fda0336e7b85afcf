"""Reports: trial balance, balance sheet, income statement, totals by category or tag."""
