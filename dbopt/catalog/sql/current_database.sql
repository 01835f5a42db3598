-- The database the session is connected to.
SELECT current_database()
