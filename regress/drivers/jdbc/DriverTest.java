/*
 * DriverTest: the PostgreSQL JDBC leg of pgtide's driver matrix. Reads the target from the
 * PGTIDE_* environment, connects with sslmode=require (certificate not validated: the test
 * servers are self-signed) and prepareThreshold=1 (server-side prepared statements from the first
 * use), then covers DDL, DML, parameters, prepared statements, a rolled-back transaction, COPY in
 * and out (CopyManager), a 100,000-row result, LISTEN/NOTIFY, cancel of pg_sleep (57014), a syntax
 * error (42601) then recovery, and a wrong password (28P01). Exits 1 at the first failure.
 */
import java.io.ByteArrayOutputStream;
import java.io.StringReader;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;
import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.copy.CopyManager;

public class DriverTest {
    static String env(String k, String d) {
        String v = System.getenv(k);
        return v == null || v.isEmpty() ? d : v;
    }

    static void check(boolean cond, String what) {
        if (!cond) {
            System.out.println("FAIL: " + what);
            System.exit(1);
        }
    }

    static void ok(String what) {
        System.out.println("ok: " + what);
    }

    static String url() {
        return "jdbc:postgresql://" + env("PGTIDE_HOST", "127.0.0.1") + ":"
            + env("PGTIDE_PORT", "6432") + "/" + env("PGTIDE_DB", "appdb")
            + "?sslmode=require&sslfactory=org.postgresql.ssl.NonValidatingFactory"
            + "&prepareThreshold=1&connectTimeout=10";
    }

    static Connection connect(String password) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", env("PGTIDE_USER", "app"));
        p.setProperty("password", password);
        return DriverManager.getConnection(url(), p);
    }

    static String md5(String s) throws Exception {
        byte[] d = MessageDigest.getInstance("MD5").digest(s.getBytes(StandardCharsets.UTF_8));
        StringBuilder sb = new StringBuilder();
        for (byte b : d)
            sb.append(String.format("%02x", b));
        return sb.toString();
    }

    public static void main(String[] args) throws Exception {
        String password = env("PGTIDE_PASSWORD", "secret");
        Connection conn = connect(password);
        Statement st = conn.createStatement();
        ResultSet rs;
        st.execute("SET client_min_messages = warning");
        st.execute("DROP TABLE IF EXISTS drv_jdbc_items");
        st.execute("CREATE TABLE drv_jdbc_items (id int PRIMARY KEY, name text, n bigint)");
        st.executeUpdate("INSERT INTO drv_jdbc_items VALUES (1, 'one', 1), (2, 'two', 2)");
        check(st.executeUpdate("UPDATE drv_jdbc_items SET n = n * 10") == 2, "update count");
        PreparedStatement ins = conn.prepareStatement("INSERT INTO drv_jdbc_items VALUES (?, ?, ?)");
        for (int i = 3; i <= 10; i++) {
            ins.setInt(1, i);
            ins.setString(2, "it's \"" + i + "\"");
            ins.setLong(3, i * 100L);
            ins.addBatch();
        }
        ins.executeBatch();
        check(st.executeUpdate("DELETE FROM drv_jdbc_items WHERE id > 8") == 2, "delete count");
        ok("ddl/dml");

        PreparedStatement get = conn.prepareStatement("SELECT name, n FROM drv_jdbc_items WHERE id = ?");
        for (int i = 0; i < 5; i++) {
            get.setInt(1, 5);
            rs = get.executeQuery();
            check(rs.next() && rs.getString(1).equals("it's \"5\"") && rs.getLong(2) == 500,
                  "prepared select");
            rs.close();
        }
        ok("parameters and prepared statements");

        conn.setAutoCommit(false);
        st.executeUpdate("INSERT INTO drv_jdbc_items VALUES (99, 'gone', 0)");
        conn.rollback();
        conn.setAutoCommit(true);
        rs = st.executeQuery("SELECT count(*) FROM drv_jdbc_items WHERE id = 99");
        check(rs.next() && rs.getInt(1) == 0, "rollback");
        ok("rollback");

        st.execute("CREATE TEMP TABLE drv_jdbc_copy (id int, t text)");
        StringBuilder payload = new StringBuilder();
        for (int i = 1; i <= 30000; i++)
            payload.append(i).append("\trow \\t \"").append(i).append("\"\n");
        CopyManager cm = conn.unwrap(PGConnection.class).getCopyAPI();
        long copied = cm.copyIn("COPY drv_jdbc_copy FROM STDIN", new StringReader(payload.toString()));
        check(copied == 30000, "copy in count " + copied);
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        cm.copyOut("COPY (SELECT * FROM drv_jdbc_copy ORDER BY id) TO STDOUT", out);
        check(out.toString(StandardCharsets.UTF_8).equals(payload.toString()), "copy out == copy in");
        ok("copy in/out");

        rs = st.executeQuery("SELECT g, md5(g::text) FROM generate_series(1, 100000) g");
        int rows = 0;
        while (rs.next()) {
            rows++;
            check(rs.getInt(1) == rows, "row order at " + rows);
            if (rows % 997 == 0)
                check(rs.getString(2).equals(md5(Integer.toString(rows))), "md5 at " + rows);
        }
        check(rows == 100000, "100k rows: " + rows);
        ok("100000-row result");

        st.execute("LISTEN drv_jdbc_chan");
        try (Connection other = connect(password)) {
            other.createStatement().execute("NOTIFY drv_jdbc_chan, 'hello jdbc'");
        }
        PGNotification[] notes = conn.unwrap(PGConnection.class).getNotifications(15000);
        check(notes != null && notes.length == 1 && notes[0].getName().equals("drv_jdbc_chan")
              && notes[0].getParameter().equals("hello jdbc"), "notification");
        st.execute("UNLISTEN *");
        ok("listen/notify");

        final Statement sleeper = conn.createStatement();
        Thread t = new Thread(() -> {
            try {
                Thread.sleep(1000);
                sleeper.cancel();
            } catch (Exception e) {
                System.out.println("cancel thread: " + e);
            }
        });
        long start = System.currentTimeMillis();
        t.start();
        try {
            sleeper.execute("SELECT pg_sleep(60)");
            check(false, "pg_sleep was not cancelled");
        } catch (SQLException e) {
            check("57014".equals(e.getSQLState()), "cancel sqlstate " + e.getSQLState());
        }
        t.join();
        check(System.currentTimeMillis() - start < 20000, "cancel took too long");
        rs = st.executeQuery("SELECT 1");
        check(rs.next() && rs.getInt(1) == 1, "alive after cancel");
        ok("cancel 57014");

        try {
            st.execute("SELEC 1");
            check(false, "syntax error accepted");
        } catch (SQLException e) {
            check("42601".equals(e.getSQLState()), "syntax sqlstate " + e.getSQLState());
        }
        rs = st.executeQuery("SELECT 2");
        check(rs.next() && rs.getInt(1) == 2, "recovery after syntax error");
        ok("syntax error 42601 then recovery");

        st.execute("DROP TABLE drv_jdbc_items");
        conn.close();

        try {
            connect("wrong-password").close();
            check(false, "wrong password accepted");
        } catch (SQLException e) {
            check("28P01".equals(e.getSQLState()), "wrong password sqlstate " + e.getSQLState()
                  + ": " + e.getMessage());
        }
        ok("wrong password 28P01");
        System.out.println("all ok");
    }
}
