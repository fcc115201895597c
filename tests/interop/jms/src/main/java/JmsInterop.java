import jakarta.jms.BytesMessage;
import jakarta.jms.Connection;
import jakarta.jms.MapMessage;
import jakarta.jms.StreamMessage;
import jakarta.jms.DeliveryMode;
import jakarta.jms.Message;
import jakarta.jms.MessageConsumer;
import jakarta.jms.MessageProducer;
import jakarta.jms.Queue;
import jakarta.jms.Session;
import jakarta.jms.TextMessage;
import java.util.Collections;
import org.apache.qpid.jms.JmsConnectionFactory;

/**
 * The JMS side of coolmq's interop test.
 *
 * <pre>
 *   JmsInterop send amqp://host:port USER PASSWORD QUEUE   send one BytesMessage with typed properties
 *   JmsInterop recv amqp://host:port USER PASSWORD QUEUE   receive one message, print it as JSON
 *   JmsInterop extreme amqp://host:port USER PASSWORD QUEUE  send a MapMessage (amqp-value body),
 *       a StreamMessage (amqp-sequence body) and a TextMessage with extreme properties, then 20
 *       ordinary BytesMessages; print the first three ids
 * </pre>
 */
public final class JmsInterop {
  public static void main(String[] args) throws Exception {
    String mode = args[0];
    JmsConnectionFactory factory = new JmsConnectionFactory(args[2], args[3], args[1]);
    try (Connection connection = factory.createConnection()) {
      connection.start();
      Session session = connection.createSession(false, Session.CLIENT_ACKNOWLEDGE);
      Queue queue = session.createQueue(args[4]);
      if (mode.equals("send")) {
        send(session, queue);
      } else if (mode.equals("extreme")) {
        extreme(session, queue);
      } else {
        recv(session, queue);
      }
    }
  }

  private static void send(Session session, Queue queue) throws Exception {
    MessageProducer producer = session.createProducer(queue);
    BytesMessage m = session.createBytesMessage();
    m.writeBytes(new byte[] {0, 1, 2, (byte) 255});
    m.setJMSCorrelationID("corr-jms");
    m.setJMSType("JmsEvent");
    m.setJMSReplyTo(session.createQueue("jms.replies"));
    m.setStringProperty("str", "hello");
    m.setIntProperty("int", 42);
    m.setLongProperty("long", 1L << 40);
    m.setBooleanProperty("flag", true);
    m.setDoubleProperty("dbl", 2.5);
    m.setFloatProperty("flt", 1.5f);
    m.setShortProperty("shrt", (short) 7);
    m.setByteProperty("byt", (byte) -3);
    producer.send(m, DeliveryMode.PERSISTENT, 6, 600_000);
    System.out.println("{\"sent\":\"" + m.getJMSMessageID() + "\"}");
  }

  private static void extreme(Session session, Queue queue) throws Exception {
    MessageProducer producer = session.createProducer(queue);
    MapMessage map = session.createMapMessage();
    map.setString("text", "v");
    map.setLong("max", Long.MAX_VALUE);
    map.setBytes("bytes", new byte[] {(byte) 0xff, 0});
    producer.send(map);
    StreamMessage stream = session.createStreamMessage();
    stream.writeString("one");
    stream.writeLong(Long.MIN_VALUE);
    stream.writeDouble(Double.NaN);
    producer.send(stream);
    TextMessage text = session.createTextMessage("");
    text.setLongProperty("max", Long.MAX_VALUE);
    text.setLongProperty("min", Long.MIN_VALUE);
    text.setDoubleProperty("nan", Double.NaN);
    text.setFloatProperty("inf", Float.POSITIVE_INFINITY);
    text.setStringProperty("empty", "");
    text.setStringProperty("JMSXGroupID", "g-1");
    text.setIntProperty("JMSXGroupSeq", 7);
    producer.send(text);
    for (int i = 0; i < 20; i++) {
      BytesMessage ok = session.createBytesMessage();
      ok.writeBytes(new byte[] {1});
      ok.setStringProperty("n", "ok-" + i);
      producer.send(ok);
    }
    System.out.println("{\"map\":" + quote(map.getJMSMessageID()) + ",\"stream\":"
        + quote(stream.getJMSMessageID()) + ",\"text\":" + quote(text.getJMSMessageID()) + "}");
  }

  private static String quote(String s) {
    return s == null ? "null" : "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
  }

  private static void recv(Session session, Queue queue) throws Exception {
    MessageConsumer consumer = session.createConsumer(queue);
    Message m = consumer.receive(20_000);
    if (m == null) {
      System.err.println("no message");
      System.exit(1);
    }
    StringBuilder json = new StringBuilder("{");
    json.append("\"id\":").append(quote(m.getJMSMessageID()));
    json.append(",\"correlation_id\":").append(quote(m.getJMSCorrelationID()));
    json.append(",\"type\":").append(quote(m.getJMSType()));
    json.append(",\"reply_to\":").append(quote(String.valueOf(m.getJMSReplyTo())));
    json.append(",\"priority\":").append(m.getJMSPriority());
    json.append(",\"persistent\":").append(m.getJMSDeliveryMode() == DeliveryMode.PERSISTENT);
    json.append(",\"timestamp\":").append(m.getJMSTimestamp());
    json.append(",\"class\":").append(quote(m.getClass().getSimpleName()));
    if (m instanceof BytesMessage b) {
      byte[] body = new byte[(int) b.getBodyLength()];
      b.readBytes(body);
      json.append(",\"body\":[");
      for (int i = 0; i < body.length; i++) {
        json.append(i == 0 ? "" : ",").append(body[i] & 0xff);
      }
      json.append("]");
    } else if (m instanceof TextMessage t) {
      json.append(",\"text\":").append(quote(t.getText()));
    }
    json.append(",\"properties\":{");
    boolean first = true;
    for (Object name : Collections.list(m.getPropertyNames())) {
      Object v = m.getObjectProperty((String) name);
      json.append(first ? "" : ",").append(quote((String) name)).append(":{\"type\":")
          .append(quote(v.getClass().getSimpleName())).append(",\"value\":").append(quote(String.valueOf(v)))
          .append("}");
      first = false;
    }
    json.append("}}");
    m.acknowledge();
    System.out.println(json);
  }
}
